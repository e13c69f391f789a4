package internaltls_test

// Benchmarks against upstream's activator TLS client (its certificate
// cache's dial and knative.dev/pkg's proxy TLS transport), on loopback to a
// TLS server presenting a queue-proxy certificate:
//
//	go test -run '^$' -bench . -benchmem -count 6 ./pkg/activator/internaltls/ > bench.txt
//	go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da -col /impl bench.txt

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fakekubeclient "knative.dev/pkg/client/injection/kube/client/fake"
	fakenssecretinformer "knative.dev/pkg/injection/clients/namespacedkube/informers/core/v1/secret/fake"
	pkgnet "knative.dev/pkg/network"
	rtesting "knative.dev/pkg/reconciler/testing"
	"knative.dev/pkg/system"
	upcert "knative.dev/serving/pkg/activator/certificate"
	uphandler "knative.dev/serving/pkg/activator/handler"

	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls/internaltlstest"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
)

type benchSides struct {
	addr             string
	upDial, thawDial func(context.Context, string, string) (net.Conn, error)
	upCtx, thawCtx   context.Context
	upRT, thawRT     http.RoundTripper
}

func setupBench(b *testing.B) *benchSides {
	b.Helper()
	b.Setenv(system.NamespaceEnvKey, ns)
	ca := internaltlstest.NewCA(b, "ca")
	sec := secret(leafData(ca, ca.Issue(b, 1, "kn-routing", internaltls.ServerName)))
	qp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	qp.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(b, 2, "kn-user-ns", internaltls.ServerName).TLS}}
	qp.StartTLS()
	b.Cleanup(qp.Close)

	ctx, cancel, informers := rtesting.SetupFakeContextWithCancel(b)
	fakekubeclient.Get(ctx).CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{})
	fakenssecretinformer.Get(ctx).Informer().GetIndexer().Add(sec)
	up, err := upcert.NewCertCache(ctx)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	wait, err := rtesting.RunAndSyncInformers(ctx, informers...)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); wait() })

	s := internaltls.NewStore(ns, zap.NewNop().Sugar())
	s.SetSecret(sec)
	plain := proxy.NewTransport(1000, 100)
	h1, _ := internaltls.Transports(plain.H1, plain.H2C, s)
	b.Cleanup(h1.CloseIdleConnections)
	rev := types.NamespacedName{Namespace: "ns", Name: "rev"}
	return &benchSides{
		addr:     qp.Listener.Addr().String(),
		upDial:   up.TLSContext(),
		thawDial: (&internaltls.Dialer{Trust: s, Dial: plain.H1.DialContext}).DialTLSContext,
		upCtx:    uphandler.WithRevisionAndID(context.Background(), nil, rev),
		thawCtx:  internaltls.WithNamespace(context.Background(), rev.Namespace),
		upRT:     pkgnet.NewProxyAutoTLSTransport(1000, 100, up.TLSContext()),
		thawRT:   h1,
	}
}

// BenchmarkDialTLS: one verified TLS connection to queue-proxy (TCP connect,
// TLS 1.3 handshake, chain, ServerName and SAN checks).
func BenchmarkDialTLS(b *testing.B) {
	s := setupBench(b)
	for _, side := range []struct {
		name string
		dial func(context.Context, string, string) (net.Conn, error)
		ctx  context.Context
	}{{"impl=upstream", s.upDial, s.upCtx}, {"impl=thaw", s.thawDial, s.thawCtx}} {
		b.Run(side.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c, err := side.dial(side.ctx, "tcp", s.addr)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkRequestTLS: a GET over a kept-alive TLS connection, the warm path.
func BenchmarkRequestTLS(b *testing.B) {
	s := setupBench(b)
	for _, side := range []struct {
		name string
		rt   http.RoundTripper
		ctx  context.Context
	}{{"impl=upstream", s.upRT, s.upCtx}, {"impl=thaw", s.thawRT, s.thawCtx}} {
		b.Run(side.name, func(b *testing.B) {
			b.ReportAllocs()
			req, _ := http.NewRequestWithContext(side.ctx, http.MethodGet, "https://"+s.addr+"/", nil)
			for b.Loop() {
				resp, err := side.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
