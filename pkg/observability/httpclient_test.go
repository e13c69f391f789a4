package observability

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
)

// The activator's client metrics look as otelhttp's transport makes them in upstream's activator, for
// the same requests: one answered, one to a pod that refuses the connection.
func TestHTTPClientMetricsMatchOtelHTTP(t *testing.T) {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("hi")) }))
	defer pod.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/"
	l.Close()

	upReg, mp := upstreamPipeline(t)
	upstream := otelhttp.NewTransport(http.DefaultTransport, otelhttp.WithMeterProvider(mp))
	thawReg := prometheus.NewRegistry()
	cm := NewHTTPClientMetrics(thawReg)
	thawReg.MustRegister(KubernetesMetrics()...)
	thaw := cm.Wrap(http.DefaultTransport)

	send := func(rt http.RoundTripper, ctx context.Context, url, body string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if resp, err := rt.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}
	rev := RevisionLabels{Service: "svc", Configuration: "cfg", Revision: "rev-1", Namespace: "ns"}
	labeler := &otelhttp.Labeler{}
	labeler.Add(attribute.String("kn.service.name", rev.Service), attribute.String("kn.configuration.name", rev.Configuration),
		attribute.String("kn.revision.name", rev.Revision), attribute.String("k8s.namespace.name", rev.Namespace))
	upCtx := otelhttp.ContextWithLabeler(context.Background(), labeler)
	thawCtx := WithRevisionLabels(context.Background(), rev)
	for _, url := range []string{pod.URL + "/", refused} {
		send(upstream, upCtx, url, "hello")
		send(thaw, thawCtx, url, "hello")
	}

	client := func(n string) bool { return strings.HasPrefix(n, "http_client_") }
	// The duration family is shared with client-go's series, which other tests may have recorded.
	otelhttpScope := func(ls []string) bool { return slices.Contains(ls, "otel_scope_name="+ScopeOtelHTTP.Name) }
	up, th := shape(t, upReg, client), shapeSeries(t, NewGatherer(thawReg, Identity{}), client, otelhttpScope)
	if len(up) != 2 {
		t.Fatalf("upstream's families: %v", up)
	}
	for n, s := range up {
		if th[n] != s {
			t.Errorf("%s\n upstream: %s\n Thaw:     %s", n, s, th[n])
		}
	}
	cm.DeleteRevision("ns", "rev-1")
	if th := shapeSeries(t, NewGatherer(thawReg, Identity{}), client, otelhttpScope); strings.Contains(th["http_client_request_duration_seconds"], "rev-1") ||
		strings.Contains(th["http_client_request_body_size_bytes"], "rev-1") {
		t.Errorf("series left after DeleteRevision: %v", th)
	}
}

// Past the OTel SDK's cardinality limit, new series go to one overflow series, as upstream's.
func TestHTTPClientMetricsCardinality(t *testing.T) {
	cm := NewHTTPClientMetrics(nil)
	t.Cleanup(func() { cm.duration.DeletePartialMatch(prometheus.Labels{"otel_metric_overflow": "true"}) })
	ok := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	rt := cm.Wrap(ok)
	ctx := WithRevisionLabels(context.Background(), RevisionLabels{Revision: "card", Namespace: "ns"})
	for i := 0; i < clientCardinalityLimit+50; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://10.0."+itoa(uint64(i/250))+"."+itoa(uint64(i%250))+":8012/", nil)
		if _, err := rt.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	cm.mu.Lock()
	n := len(cm.series)
	cm.mu.Unlock()
	if n != clientCardinalityLimit-1 {
		t.Fatalf("%d series kept, want %d", n, clientCardinalityLimit-1)
	}
	cm.DeleteRevision("ns", "card")
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if len(cm.series) != 0 {
		t.Fatalf("%d series left", len(cm.series))
	}
}
