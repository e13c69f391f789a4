package observability

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	upstreamprom "knative.dev/pkg/observability/metrics/prometheus"
)

// startUpstream runs knative.dev/pkg's Prometheus server, as upstream's binaries do with metrics-protocol
// prometheus, on a loopback port. It returns "" when NewServer refuses the environment (the process
// exits), and a stop function reporting whether Serve failed by itself (no endpoint, the process runs on).
func startUpstream(t *testing.T) (addr string, failed func() bool, err error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close() // the server listens by itself; the port stays free on loopback long enough
	_, port, _ := net.SplitHostPort(addr)
	if p, _ := strconv.Atoi(port); p < 1024 {
		t.Skipf("loopback gave port %d, below upstream's minimum", p)
	}
	s, err := upstreamprom.NewServer(upstreamprom.WithHost("127.0.0.1"), upstreamprom.WithPort(port))
	if err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	var serveErr error
	go func() {
		defer close(done)
		serveErr = s.Serve()
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	failed = func() bool {
		select {
		case <-done:
			return !errors.Is(serveErr, http.ErrServerClosed)
		default:
			return false
		}
	}
	// Wait until it accepts connections, or its Serve gives up (it cannot load its certificate).
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !failed() {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
		case <-deadline.C:
			t.Fatalf("upstream's server at %s neither listens nor fails", addr)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return addr, failed, nil
}

// TestMetricsTLSMatchesUpstream runs every environment of tlsEnvCases through knative.dev/pkg's own
// Prometheus server and Thaw's, with metrics-protocol prometheus, and checks that each refuses to start
// where the other does and accepts and refuses the same scrapes (TLS versions, cipher suites, curves,
// client certificates, plain HTTP, h2). Where upstream starts but cannot serve (an unreadable
// certificate), both count as no endpoint: Thaw stops at start instead.
func TestMetricsTLSMatchesUpstream(t *testing.T) {
	p := newPKI(t)
	for _, tc := range tlsEnvCases {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env, p)
			upAddr, upFailed, upErr := startUpstream(t)
			up := outcome(t, p, upAddr)
			if upErr == nil && upFailed() {
				up = nil // Serve returned by itself: no endpoint
			}
			_, thawErr := MetricsTLSFromEnv(ProtocolPrometheus, os.Getenv)
			thawAddr, _ := startThaw(t, ProtocolPrometheus)
			thaw := outcome(t, p, thawAddr)
			if !sameOutcome(up, thaw) {
				t.Errorf("upstream accepted %v (start-up error %v), Thaw %v (start-up error %v)", up, upErr, thaw, thawErr)
			}
			if (upErr != nil) && thawErr == nil {
				t.Errorf("upstream refused to start (%v), Thaw did not", upErr)
			}
			if want := asSet(tc.accept); !sameOutcome(up, want) {
				t.Errorf("upstream accepted %v, the table says %v", up, want)
			}
		})
	}
}

// FuzzMetricsTLSEnv: whatever the TLS environment holds, Thaw refuses to start exactly where
// knative.dev/pkg's NewServer does (with a loadable certificate, the only thing upstream checks later),
// and never panics.
func FuzzMetricsTLSEnv(f *testing.F) {
	f.Add(uint8(1), "", "", "", "", "", uint8(0))
	f.Add(uint8(1), "1.2", "1.3", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, ,", "X25519,P-256", " Require ", uint8(1))
	f.Add(uint8(0), "1.0", "", "nope", "", "none", uint8(4))
	f.Add(uint8(2), "", "", "", "", "optional", uint8(2))
	f.Add(uint8(1), "", "", "", "X448", "always", uint8(3))
	p := newPKI(f)
	f.Fuzz(func(t *testing.T, pair uint8, minV, maxV, ciphers, curves, auth string, ca uint8) {
		for _, v := range []string{minV, maxV, ciphers, curves, auth} {
			if strings.ContainsRune(v, 0) {
				t.Skip("an environment value cannot hold NUL")
			}
		}
		env := map[string]string{EnvMetricsTLSMinVersion: minV, EnvMetricsTLSMaxVersion: maxV,
			EnvMetricsTLSCiphers: ciphers, EnvMetricsTLSCurves: curves, EnvMetricsTLSClientAuth: auth,
			EnvMetricsTLSClientCAFile: []string{"", "$CA", "$EMPTY", "$MISSING", " "}[ca%5]}
		switch pair % 3 {
		case 1:
			env[EnvMetricsTLSCert], env[EnvMetricsTLSKey] = "$CERT", "$KEY"
		case 2:
			env[EnvMetricsTLSCert] = "$CERT"
		}
		setEnv(t, env, p)
		_, upErr := upstreamprom.NewServer(upstreamprom.WithHost("127.0.0.1"), upstreamprom.WithPort("9090"))
		_, thawErr := MetricsTLSFromEnv(ProtocolPrometheus, os.Getenv)
		if (upErr == nil) != (thawErr == nil) {
			t.Fatalf("%v: upstream %v, Thaw %v", env, upErr, thawErr)
		}
	})
}
