package observability

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pki is what a test needs for real TLS on loopback: a CA, a server certificate for 127.0.0.1 signed by
// it, a client certificate signed by it and one signed by another CA, all as files.
type pki struct {
	dir                       string
	caFile, certFile, keyFile string
	otherCAFile, emptyFile    string
	roots                     *x509.CertPool
	client, strangerClient    tls.Certificate
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), roots: x509.NewCertPool()}
	ca, caKey := selfSigned(t, "metrics CA")
	other, otherKey := selfSigned(t, "another CA")
	p.roots.AddCert(ca)
	p.caFile = p.write(t, "ca.crt", pemCert(ca))
	p.otherCAFile = p.write(t, "other-ca.crt", pemCert(other))
	p.emptyFile = p.write(t, "empty.crt", []byte("not a certificate\n"))

	serverCert, serverKey := issue(t, ca, caKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "metrics"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.certFile = p.write(t, "tls.crt", pemCert(serverCert))
	p.keyFile = p.write(t, "tls.key", pemKey(t, serverKey))

	c, k := issue(t, ca, caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "prometheus"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.client = tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	c, k = issue(t, other, otherKey, &x509.Certificate{Subject: pkix.Name{CommonName: "stranger"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.strangerClient = tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	return p
}

func (p *pki) write(t testing.TB, name string, b []byte) string {
	t.Helper()
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

var serial int64

func selfSigned(t testing.TB, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemKey(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// probe is one way a scraper connects; accepted means it got /metrics with 200.
type probe struct {
	name  string
	plain bool // http:// rather than https://
	tls   func(p *pki) *tls.Config
	h2    bool
}

func clientTLS(p *pki, mutate func(*tls.Config)) *tls.Config {
	c := &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1"}
	if mutate != nil {
		mutate(c)
	}
	return c
}

var probes = []probe{
	{name: "plain http", plain: true},
	{name: "tls1.3", tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 })
	}},
	{name: "tls1.3 h2", h2: true, tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 })
	}},
	{name: "tls1.2", tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 })
	}},
	{name: "tls1.2 aes128-gcm only", tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		})
	}},
	{name: "tls1.2 chacha20 only", tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
		})
	}},
	{name: "tls1.3 P-256 only", tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS13
			c.CurvePreferences = []tls.CurveID{tls.CurveP256}
		})
	}},
	{name: "client cert", tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13; sendCert(c, p.client) })
	}},
	{name: "client cert of another CA", tls: func(p *pki) *tls.Config {
		return clientTLS(p, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13; sendCert(c, p.strangerClient) })
	}},
}

// sendCert makes the client present cert whatever CAs the server asks for (Go's client would otherwise
// send none that the server's CA list does not name, and a wrong certificate would never be tried).
func sendCert(c *tls.Config, cert tls.Certificate) {
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
}

// scrape GETs /metrics at addr as pr says; the error says why it was refused.
func scrape(ctx context.Context, p *pki, addr string, pr probe) error {
	tr := &http.Transport{DisableKeepAlives: true, ForceAttemptHTTP2: pr.h2}
	scheme := "http"
	if !pr.plain {
		scheme = "https"
		tr.TLSClientConfig = pr.tls(p)
		if !pr.h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	if pr.h2 && resp.ProtoMajor != 2 {
		return errors.New("not HTTP/2: " + resp.Proto)
	}
	return nil
}

// startThaw serves Thaw's metrics page as the binaries do, on a loopback port; "" when the environment
// stops the process at start.
func startThaw(t *testing.T, protocol string) (addr string, startErr error) {
	t.Helper()
	cfg, err := MetricsTLSFromEnv(protocol, os.Getenv)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewMetricsServer(ln.Addr().String(), prometheus.NewRegistry(), Identity{Service: "activator"})
	srv.TLSConfig = cfg
	srv.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ServeMetrics(srv, ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String(), nil
}

func setEnv(t *testing.T, env map[string]string, p *pki) {
	t.Helper()
	for _, k := range []string{EnvMetricsTLSCert, EnvMetricsTLSKey, EnvMetricsTLSClientAuth, EnvMetricsTLSClientCAFile,
		EnvMetricsTLSMinVersion, EnvMetricsTLSMaxVersion, EnvMetricsTLSCiphers, EnvMetricsTLSCurves,
		"METRICS_PROMETHEUS_HOST", "METRICS_PROMETHEUS_PORT"} {
		t.Setenv(k, "")
	}
	r := strings.NewReplacer("$CERT", p.certFile, "$KEY", p.keyFile, "$CA", p.caFile, "$OTHERCA", p.otherCAFile,
		"$EMPTY", p.emptyFile, "$MISSING", filepath.Join(p.dir, "missing"))
	for k, v := range env {
		t.Setenv(k, r.Replace(v))
	}
}

// tlsEnvCases are environments of the metrics endpoint, each with the probes it should accept (nil:
// the process does not start, or serves no metrics endpoint).
var tlsEnvCases = []struct {
	name   string
	env    map[string]string
	accept []string
}{
	{"no TLS", nil, []string{"plain http"}},
	{"TLS, defaults: 1.3 only", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY"},
		[]string{"tls1.3", "tls1.3 h2", "tls1.3 P-256 only", "client cert", "client cert of another CA"}},
	{"min 1.2", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSMinVersion: "1.2"},
		[]string{"tls1.3", "tls1.3 h2", "tls1.2", "tls1.2 aes128-gcm only", "tls1.2 chacha20 only", "tls1.3 P-256 only", "client cert", "client cert of another CA"}},
	{"1.2 only, one suite", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSMinVersion: "1.2", EnvMetricsTLSMaxVersion: "1.2", EnvMetricsTLSCiphers: " TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 ,"},
		[]string{"tls1.2", "tls1.2 aes128-gcm only"}},
	{"min above max", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSMinVersion: "1.3", EnvMetricsTLSMaxVersion: "1.2"}, []string{}},
	{"curves X25519 only", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSCurves: "X25519"},
		[]string{"tls1.3", "tls1.3 h2", "client cert", "client cert of another CA"}},
	{"curves by standard name", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSCurves: "P-256"},
		[]string{"tls1.3", "tls1.3 h2", "tls1.3 P-256 only", "client cert", "client cert of another CA"}},
	{"client auth require", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: "require", EnvMetricsTLSClientCAFile: "$CA"}, []string{"client cert"}},
	{"client auth Require, blanks around", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: " Require ", EnvMetricsTLSClientCAFile: " $CA "}, []string{"client cert"}},
	{"client auth optional", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: "optional", EnvMetricsTLSClientCAFile: "$CA"},
		[]string{"tls1.3", "tls1.3 h2", "tls1.3 P-256 only", "client cert"}},
	{"client auth require, another CA", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: "require", EnvMetricsTLSClientCAFile: "$OTHERCA"}, []string{"client cert of another CA"}},
	{"client auth none, blank CA", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: "none", EnvMetricsTLSClientCAFile: "  "},
		[]string{"tls1.3", "tls1.3 h2", "tls1.3 P-256 only", "client cert", "client cert of another CA"}},
	{"client auth none without TLS", map[string]string{EnvMetricsTLSClientAuth: "none"}, []string{"plain http"}},
	{"TLS settings without TLS are not read", map[string]string{EnvMetricsTLSMinVersion: "1.0", EnvMetricsTLSCiphers: "bogus"},
		[]string{"plain http"}},
	// Refused at start.
	{"cert without key", map[string]string{EnvMetricsTLSCert: "$CERT"}, nil},
	{"key without cert", map[string]string{EnvMetricsTLSKey: "$KEY"}, nil},
	{"min 1.1", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSMinVersion: "1.1"}, nil},
	{"min with a blank", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSMinVersion: "1.2 "}, nil},
	{"max TLS1.3", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSMaxVersion: "TLS1.3"}, nil},
	{"unknown suite", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSCiphers: "TLS_AES_128_GCM_SHA256,nope"}, nil},
	{"insecure suite", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSCiphers: "TLS_RSA_WITH_RC4_128_SHA"}, nil},
	{"unknown curve", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSCurves: "X448"}, nil},
	{"client auth bogus", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSClientAuth: "always"}, nil},
	{"require without CA", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSClientAuth: "require"}, nil},
	{"optional with blank CA", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: "optional", EnvMetricsTLSClientCAFile: " "}, nil},
	{"CA without client auth", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSClientCAFile: "$CA"}, nil},
	{"require without TLS", map[string]string{EnvMetricsTLSClientAuth: "require", EnvMetricsTLSClientCAFile: "$CA"}, nil},
	{"CA without TLS", map[string]string{EnvMetricsTLSClientCAFile: "$CA"}, nil},
	{"blank CA without TLS", map[string]string{EnvMetricsTLSClientCAFile: " "}, nil},
	{"CA file missing", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: "require", EnvMetricsTLSClientCAFile: "$MISSING"}, nil},
	{"CA file without a certificate", map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY",
		EnvMetricsTLSClientAuth: "require", EnvMetricsTLSClientCAFile: "$EMPTY"}, nil},
	// Upstream starts but serves no endpoint; Thaw refuses to start.
	{"cert file missing", map[string]string{EnvMetricsTLSCert: "$MISSING", EnvMetricsTLSKey: "$KEY"}, nil},
	{"cert and key swapped", map[string]string{EnvMetricsTLSCert: "$KEY", EnvMetricsTLSKey: "$CERT"}, nil},
}

// outcome is the set of probes an endpoint accepted, or "down".
func outcome(t *testing.T, p *pki, addr string) map[string]bool {
	t.Helper()
	if addr == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := map[string]bool{}
	for _, pr := range probes {
		if err := scrape(ctx, p, addr, pr); err == nil {
			got[pr.name] = true
		} else {
			t.Logf("%s: %s refused: %v", addr, pr.name, err)
		}
	}
	return got
}

func asSet(names []string) map[string]bool {
	if names == nil {
		return nil
	}
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func sameOutcome(a, b map[string]bool) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func TestMetricsTLSProbes(t *testing.T) {
	p := newPKI(t)
	for _, tc := range tlsEnvCases {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env, p)
			addr, err := startThaw(t, ProtocolPrometheus)
			if err != nil {
				t.Logf("start-up error: %v", err)
			}
			if got, want := outcome(t, p, addr), asSet(tc.accept); !sameOutcome(got, want) {
				t.Errorf("accepted %v, want %v (start-up error: %v)", got, want, err)
			}
		})
	}
}

// TestMetricsTLSOnlyWithPrometheus: with another metrics-protocol upstream has no metrics server and
// reads none of this environment; Thaw's page stays plain and nothing stops the process.
func TestMetricsTLSOnlyWithPrometheus(t *testing.T) {
	p := newPKI(t)
	for _, protocol := range []string{ProtocolNone, ProtocolGRPC, ProtocolHTTP} {
		for _, env := range []map[string]string{
			{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY"},
			{EnvMetricsTLSCert: "$CERT"},
			{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSMinVersion: "1.0"},
		} {
			setEnv(t, env, p)
			addr, err := startThaw(t, protocol)
			if err != nil {
				t.Fatalf("%s %v: start-up error %v", protocol, env, err)
			}
			if got := outcome(t, p, addr); !sameOutcome(got, asSet([]string{"plain http"})) {
				t.Errorf("%s %v: accepted %v, want plain http only", protocol, env, got)
			}
		}
	}
}

// TestMetricsTLSErrorsNameTheVariable: every start-up error names the variable at fault, as upstream's.
func TestMetricsTLSErrorsNameTheVariable(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{EnvMetricsTLSCert: "$CERT"}, EnvMetricsTLSKey},
		{map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSMinVersion: "1.1"}, EnvMetricsTLSMinVersion},
		{map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSMaxVersion: "x"}, EnvMetricsTLSMaxVersion},
		{map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSCiphers: "x"}, EnvMetricsTLSCiphers},
		{map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSCurves: "x"}, EnvMetricsTLSCurves},
		{map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSClientAuth: "x"}, EnvMetricsTLSClientAuth},
		{map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSClientAuth: "require"}, EnvMetricsTLSClientCAFile},
		{map[string]string{EnvMetricsTLSCert: "$CERT", EnvMetricsTLSKey: "$KEY", EnvMetricsTLSClientAuth: "require",
			EnvMetricsTLSClientCAFile: "$EMPTY"}, EnvMetricsTLSClientCAFile},
		{map[string]string{EnvMetricsTLSCert: "$MISSING", EnvMetricsTLSKey: "$KEY"}, EnvMetricsTLSCert},
	} {
		setEnv(t, tc.env, p)
		_, err := MetricsTLSFromEnv(ProtocolPrometheus, os.Getenv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.env, err, tc.want)
		}
	}
}
