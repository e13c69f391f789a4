package observability

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// The environment knative.dev/pkg's Prometheus server reads (observability/metrics/prometheus) to serve
// /metrics over HTTPS, with the TLS settings of knative.dev/pkg/network/tls under the METRICS_PROMETHEUS_
// prefix.
const (
	EnvMetricsTLSCert         = "METRICS_PROMETHEUS_TLS_CERT"
	EnvMetricsTLSKey          = "METRICS_PROMETHEUS_TLS_KEY"
	EnvMetricsTLSClientAuth   = "METRICS_PROMETHEUS_TLS_CLIENT_AUTH"
	EnvMetricsTLSClientCAFile = "METRICS_PROMETHEUS_TLS_CLIENT_CA_FILE"
	EnvMetricsTLSMinVersion   = "METRICS_PROMETHEUS_TLS_MIN_VERSION"
	EnvMetricsTLSMaxVersion   = "METRICS_PROMETHEUS_TLS_MAX_VERSION"
	EnvMetricsTLSCiphers      = "METRICS_PROMETHEUS_TLS_CIPHER_SUITES"
	EnvMetricsTLSCurves       = "METRICS_PROMETHEUS_TLS_CURVE_PREFERENCES"
)

// MetricsTLSFromEnv returns the TLS configuration of the metrics endpoint, or nil for plain HTTP.
//
// Upstream builds its Prometheus server, and reads this environment, only when config-observability's
// metrics-protocol is prometheus at start; it serves HTTPS when both METRICS_PROMETHEUS_TLS_CERT and
// METRICS_PROMETHEUS_TLS_KEY are set. So with any other protocol the environment is not looked at (an
// invalid value there must not stop a process upstream would run) and Thaw's always-on page stays plain.
// Otherwise it is validated as upstream validates it, and every invalid value is an error naming its
// variable, meant to stop the process at start as upstream's does.
//
// One difference: the certificate and key are loaded here, so an unreadable pair is also a start-up
// error; upstream loads them when it starts listening and, failing, only prints the error and runs on
// without a metrics endpoint. As upstream, they are read once (a rotation needs a restart).
func MetricsTLSFromEnv(protocol string, getenv func(string) string) (*tls.Config, error) {
	if protocol != ProtocolPrometheus {
		return nil, nil
	}
	certFile, keyFile := getenv(EnvMetricsTLSCert), getenv(EnvMetricsTLSKey)
	rawAuth, caFile := getenv(EnvMetricsTLSClientAuth), getenv(EnvMetricsTLSClientCAFile)
	auth := strings.ToLower(strings.TrimSpace(rawAuth))
	trimmedCA := strings.TrimSpace(caFile)
	verifyClients := auth == "optional" || auth == "require"

	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("both %s and %s must be set or neither", EnvMetricsTLSCert, EnvMetricsTLSKey)
	}
	tlsOn := certFile != ""
	switch auth {
	case "", "none", "optional", "require":
	default:
		return nil, fmt.Errorf("invalid %s %q: must be \"none\", \"optional\" or \"require\"", EnvMetricsTLSClientAuth, rawAuth)
	}
	// The checks below keep upstream's order and its exact tests (an all-blank CA file name counts as set
	// without TLS and as unset with it), so that every environment is accepted or refused as upstream's.
	if !tlsOn && ((auth != "" && auth != "none") || caFile != "") {
		return nil, fmt.Errorf("%s and %s require TLS to be enabled (%s and %s must be set)",
			EnvMetricsTLSClientAuth, EnvMetricsTLSClientCAFile, EnvMetricsTLSCert, EnvMetricsTLSKey)
	}
	if !tlsOn {
		return nil, nil
	}
	if verifyClients && trimmedCA == "" {
		return nil, fmt.Errorf("%s must be set when %s is %q: client certificates cannot be verified without a CA",
			EnvMetricsTLSClientCAFile, EnvMetricsTLSClientAuth, auth)
	}
	if !verifyClients && trimmedCA != "" {
		return nil, fmt.Errorf("%s is set but %s is %q: set it to \"optional\" or \"require\" to verify client certificates",
			EnvMetricsTLSClientCAFile, EnvMetricsTLSClientAuth, auth)
	}

	cfg, err := tlsSettingsFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	if verifyClients {
		pemBytes, err := os.ReadFile(trimmedCA)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", EnvMetricsTLSClientCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%s %q holds no PEM certificate", EnvMetricsTLSClientCAFile, trimmedCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		if auth == "optional" {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading %s %q and %s %q: %w", EnvMetricsTLSCert, certFile, EnvMetricsTLSKey, keyFile, err)
	}
	cfg.Certificates = []tls.Certificate{pair}
	return cfg, nil
}

// tlsSettingsFromEnv reads versions, cipher suites and curves as knative.dev/pkg/network/tls does:
// TLS 1.3 at least unless told otherwise, versions "1.2" or "1.3" exactly, cipher suites by Go's name
// among the secure ones (tls.CipherSuites), curves by Go's or the standard name.
func tlsSettingsFromEnv(getenv func(string) string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if v := getenv(EnvMetricsTLSMinVersion); v != "" {
		ver, err := tlsVersion(v)
		if err != nil {
			return nil, fmt.Errorf("invalid %s %q: %w", EnvMetricsTLSMinVersion, v, err)
		}
		cfg.MinVersion = ver
	}
	if v := getenv(EnvMetricsTLSMaxVersion); v != "" {
		ver, err := tlsVersion(v)
		if err != nil {
			return nil, fmt.Errorf("invalid %s %q: %w", EnvMetricsTLSMaxVersion, v, err)
		}
		cfg.MaxVersion = ver
	}
	if v := getenv(EnvMetricsTLSCiphers); v != "" {
		byName := make(map[string]uint16)
		for _, cs := range tls.CipherSuites() {
			byName[cs.Name] = cs.ID
		}
		cfg.CipherSuites = []uint16{}
		for _, name := range listItems(v) {
			id, ok := byName[name]
			if !ok {
				return nil, fmt.Errorf("invalid %s: unknown cipher suite %q", EnvMetricsTLSCiphers, name)
			}
			cfg.CipherSuites = append(cfg.CipherSuites, id)
		}
	}
	if v := getenv(EnvMetricsTLSCurves); v != "" {
		cfg.CurvePreferences = []tls.CurveID{}
		for _, name := range listItems(v) {
			id, ok := curvesByName[name]
			if !ok {
				return nil, fmt.Errorf("invalid %s: unknown curve %q", EnvMetricsTLSCurves, name)
			}
			cfg.CurvePreferences = append(cfg.CurvePreferences, id)
		}
	}
	return cfg, nil
}

func tlsVersion(v string) (uint16, error) {
	switch v {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unsupported TLS version %q: must be \"1.2\" or \"1.3\"", v)
}

// listItems splits a comma-separated list, trimming each item and dropping empty ones.
func listItems(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

var curvesByName = map[string]tls.CurveID{
	"CurveP256": tls.CurveP256, "P-256": tls.CurveP256,
	"CurveP384": tls.CurveP384, "P-384": tls.CurveP384,
	"CurveP521": tls.CurveP521, "P-521": tls.CurveP521,
	"X25519": tls.X25519, "X25519MLKEM768": tls.X25519MLKEM768,
}

// ServeMetrics serves srv on ln, over TLS when srv.TLSConfig is set (its Certificates, from
// MetricsTLSFromEnv). net/http then offers h2 and http/1.1 by ALPN, as upstream's ListenAndServeTLS does.
func ServeMetrics(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}
