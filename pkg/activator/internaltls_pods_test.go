package activator

// Pod-level test of system-internal-tls: the activator's data plane with TLS
// to real upstream queue-proxy pods serving the certificate the control plane
// issues for their namespace. Skips unless run as root with THAW_QUEUE_PROXY.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls/internaltlstest"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/test/podharness"
)

// certDir writes a queue-proxy certificate for sans, signed by ca, as the
// serving-certs Secret's mount holds it.
func certDir(t *testing.T, ca *internaltlstest.CA, sans ...string) string {
	t.Helper()
	l := ca.Issue(t, 42, sans...)
	dir := t.TempDir()
	for name, b := range map[string][]byte{"tls.crt": l.CertPEM, "tls.key": l.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startTLSPodPlane is startPodPlane with system-internal-tls: probes stay on
// the plain port, requests go to 8112 over TLS, trusting the CA of the
// activator's Secret.
func startTLSPodPlane(t *testing.T, ca *internaltlstest.CA) *podPlane {
	t.Helper()
	logger := zaptest.NewLogger(t).Sugar()
	info := &revisions.Info{ID: podRev, UID: "uid-1", Timeout: time.Minute, ResponseStartTimeout: time.Minute, ProbeOptimisation: true}
	revs := &podRevs{}
	kube := fake.NewSimpleClientset()
	thr := throttler.New("10.0.0.1", throttler.Options{}, clock.RealClock{}, logger.Named("throttler"))
	tr := proxy.NewTransport(1000, 100)
	t.Cleanup(tr.CloseIdleConnections)
	store := internaltls.NewStore("knative-serving", logger.Named("internaltls"))
	activatorCert := ca.Issue(t, 1, "kn-routing", internaltls.ServerName)
	store.SetSecret(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "knative-serving", Name: internaltls.SecretName},
		Data: map[string][]byte{internaltls.CertKey: activatorCert.CertPEM, internaltls.KeyKey: activatorCert.KeyPEM, internaltls.CAKey: ca.PEM}})
	h1, h2 := internaltls.Transports(tr.H1, tr.H2C, store)
	secure := &proxy.Transport{H1: h1, H2C: h2}
	t.Cleanup(secure.CloseIdleConnections)

	mgr := endpoints.NewManager(kube, revs, thr, endpoints.Options{Transport: tr, Logger: logger.Named("endpoints")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { mgr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if !mgr.WaitForSync(ctx) {
		t.Fatal("endpoints informers did not sync")
	}
	revs.mu.Lock()
	revs.info = info
	revs.mu.Unlock()
	for _, fn := range revs.onUps {
		fn(info)
	}
	thr.UpsertRevision(podRev, throttler.RevisionConfig{})
	h := newChain(testConfig{Config: Config{
		Throttler:   thr,
		Proxy:       proxy.New(secure, logger.Named("proxy"), proxy.Options{HTTPS: true}),
		IsNotSent:   func(err error) bool { return errors.Is(err, proxy.ErrNotSent) },
		InternalTLS: &internaltls.DefaultPorts,
		Logger:      logger,
	}, Revisions: revs})
	// HTTP/1.1 and prior-knowledge h2c in front, so HTTP/2 requests can be sent too.
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return &podPlane{url: s.URL, kube: kube, thr: thr}
}

// TestPodInternalTLS: requests reach upstream's queue-proxy on 8112 over TLS
// (HTTP/1.1, and HTTP/2 by ALPN through to an h2c app) when its certificate
// carries the revision namespace's SAN, and are refused (502, naming the SAN)
// when it is another namespace's.
func TestPodInternalTLS(t *testing.T) {
	net := podharness.NewNetwork(t)
	ca := internaltlstest.NewCA(t, "knative-selfsigned-ca")
	goodCerts := certDir(t, ca, internaltls.UserSAN(podRev.Namespace), internaltls.ServerName)
	good := net.StartPod(t, podharness.PodOptions{CertDir: goodCerts})
	grpcApp := net.BuildApp(t, "github.com/thaw-dev/thaw/test/apps/grpcping")
	h2App := net.StartPod(t, podharness.PodOptions{CertDir: goodCerts, App: grpcApp})
	impostor := net.StartPod(t, podharness.PodOptions{CertDir: certDir(t, ca, internaltls.UserSAN("other"), internaltls.ServerName)})
	p := startTLSPodPlane(t, ca)

	p.setPods(t, good)
	for i := 0; i < 5; i++ {
		if code, body := p.get(t, ""); code != 200 {
			t.Fatalf("request %d over TLS: %d %q\n%s", i, code, body, good.Logs())
		}
	}
	if !strings.Contains(good.Logs(), "Starting tls server main") {
		t.Fatalf("queue-proxy did not serve TLS:\n%s", good.Logs())
	}

	// HTTP/2 end to end: client → activator (h2c) → queue-proxy (h2 over TLS) → app (h2c).
	p.setPods(t, h2App)
	h2Protocols := new(http.Protocols)
	h2Protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: h2Protocols}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A gRPC health check (an empty message, framed): the app answers it
		// as gRPC only if it arrived over HTTP/2, i.e. queue-proxy got HTTP/2 too.
		req, _ := http.NewRequest(http.MethodPost, p.url+"/grpc.health.v1.Health/Check", strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		req.Header.Set(proxy.RevisionHeader, podRev.Name)
		req.Header.Set(proxy.NamespaceHeader, podRev.Namespace)
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && resp.Header.Get("Content-Type") == "application/grpc" && resp.Trailer.Get("Grpc-Status") == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTP/2 over TLS: %d %s %q\n%s", resp.StatusCode, resp.Proto, b, h2App.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}

	p.setPods(t, impostor)
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, body := p.get(t, "")
		if code == 502 && strings.Contains(body, `lack "kn-user-default"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the impostor pod was still answered: %d %q", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
