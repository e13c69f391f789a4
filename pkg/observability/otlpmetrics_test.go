package observability

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// receiver keeps every OTLP metrics request it gets, over gRPC or HTTP.
type receiver struct {
	colmetricspb.UnimplementedMetricsServiceServer
	mu   sync.Mutex
	reqs []*colmetricspb.ExportMetricsServiceRequest
}

func (r *receiver) Export(_ context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	return &colmetricspb.ExportMetricsServiceResponse{}, nil
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	m := &colmetricspb.ExportMetricsServiceRequest{}
	if req.URL.Path != "/v1/metrics" || req.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, m) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	_, _ = r.Export(req.Context(), m)
	b, _ := proto.Marshal(&colmetricspb.ExportMetricsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

// last indexes the last request's metrics by name, its resource's attributes, and each metric's scope.
func (r *receiver) last(t *testing.T) (map[string]*metricspb.Metric, map[string]string, map[string]string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("nothing received")
	}
	out, res, scopes := map[string]*metricspb.Metric{}, map[string]string{}, map[string]string{}
	for _, rm := range r.reqs[len(r.reqs)-1].GetResourceMetrics() {
		for _, kv := range rm.GetResource().GetAttributes() {
			res[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				out[m.GetName()] = m
				scopes[m.GetName()] = sm.GetScope().GetName()
			}
		}
	}
	return out, res, scopes
}

// startReceiver serves an OTLP metrics receiver on loopback over protocol and returns its endpoint as
// config-observability would name it.
func startReceiver(t *testing.T, protocol string) (*receiver, string) {
	t.Helper()
	rcv := &receiver{}
	if protocol == ProtocolGRPC {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		colmetricspb.RegisterMetricsServiceServer(srv, rcv)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		return rcv, "http://" + lis.Addr().String()
	}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	return rcv, srv.URL + "/v1/metrics"
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// testRegistry holds families named as the activator's, one of Thaw's own and client_golang's Go
// collector, with known values.
func testRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	queued := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kn_revision_request_queued", Help: "queued"}, []string{"k8s_namespace_name", "kn_revision_name"})
	errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "kn_activator_stats_conn_errors_total", ConstLabels: prometheus.Labels{"peer": "autoscaler"}})
	conc := prometheus.NewGauge(prometheus.GaugeOpts{Name: "kn_revision_request_concurrency"})
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_server_request_duration_seconds", Buckets: []float64{0.1, 1}},
		[]string{"http_request_method", "http_response_status_code"})
	thaw := prometheus.NewCounter(prometheus.CounterOpts{Name: "thaw_test_dropped_total"})
	reg.MustRegister(queued, errs, conc, h, thaw, collectors.NewGoCollector())
	queued.WithLabelValues("ns", "rev-1").Set(3)
	errs.Add(2)
	conc.Set(1.5)
	for _, v := range []float64{0.05, 0.5, 0.7, 5} {
		h.WithLabelValues("GET", "200").Observe(v)
	}
	thaw.Inc()
	return reg
}

func TestMetricsExportOTLP(t *testing.T) {
	reg := testRegistry()
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(protocol, func(t *testing.T) {
			rcv, endpoint := startReceiver(t, protocol)
			cfg, err := NewConfigFromMap(map[string]string{"metrics-protocol": protocol, "metrics-endpoint": endpoint, "metrics-export-interval": "1h"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			exp, err := NewMetricsExport(ctx, cfg, Identity{Service: "activator", PodName: "p", Namespace: "knative-serving", Version: "v1"}, reg)
			if err != nil || exp == nil {
				t.Fatalf("NewMetricsExport = %v, %v", exp, err)
			}
			t.Cleanup(func() { _ = exp.Shutdown(ctx) })
			if err := exp.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got, res, scopes := rcv.last(t)
			for k, v := range map[string]string{"service.name": "activator", "k8s.pod.name": "p", "k8s.namespace.name": "knative-serving",
				"service.version": "v1", "telemetry.sdk.language": "go"} {
				if res[k] != v {
					t.Errorf("resource %s = %q, want %q (%v)", k, res[k], v, res)
				}
			}
			// Upstream's instrument names, units and scopes, not the Prometheus families'.
			for name, scope := range map[string]string{
				"kn.revision.request.queued":      ScopeActivator.Name,
				"kn.activator.stats.conn.errors":  ScopeActivator.Name,
				"kn.revision.request.concurrency": ScopeActivator.Name,
				"http.server.request.duration":    ScopeOtelHTTP.Name,
				"thaw_test_dropped_total":         ScopeThaw.Name,
			} {
				if scopes[name] != scope {
					t.Errorf("%s in scope %q, want %q", name, scopes[name], scope)
				}
			}
			for _, absent := range []string{"kn_revision_request_queued", "go_goroutines", "go_gc_duration_seconds"} {
				if got[absent] != nil {
					t.Errorf("%s exported over OTLP", absent)
				}
			}
			// An UpDownCounter: non-monotonic integer sum, attributes with upstream's keys.
			q := got["kn.revision.request.queued"]
			if s := q.GetSum(); s == nil || s.GetIsMonotonic() || q.GetUnit() != "{request}" || len(s.GetDataPoints()) != 1 ||
				s.GetDataPoints()[0].GetAsInt() != 3 || attrs(s.GetDataPoints()[0].GetAttributes())["kn.revision.name"] != "rev-1" ||
				attrs(s.GetDataPoints()[0].GetAttributes())["k8s.namespace.name"] != "ns" {
				t.Errorf("queued: %v", q)
			}
			e := got["kn.activator.stats.conn.errors"]
			if s := e.GetSum(); s == nil || !s.GetIsMonotonic() || s.GetDataPoints()[0].GetAsInt() != 2 ||
				attrs(s.GetDataPoints()[0].GetAttributes())["peer"] != "autoscaler" {
				t.Errorf("errors: %v", e)
			}
			if g := got["kn.revision.request.concurrency"].GetGauge(); g == nil || g.GetDataPoints()[0].GetAsDouble() != 1.5 {
				t.Errorf("concurrency: %v", got["kn.revision.request.concurrency"])
			}
			hm := got["http.server.request.duration"]
			hh := hm.GetHistogram()
			if hh == nil || len(hh.GetDataPoints()) != 1 || hm.GetUnit() != "s" {
				t.Fatalf("histogram: %v", hm)
			}
			dp := hh.GetDataPoints()[0]
			var code int64
			for _, kv := range dp.GetAttributes() {
				if kv.GetKey() == "http.response.status_code" {
					code = kv.GetValue().GetIntValue()
				}
			}
			if code != 200 {
				t.Errorf("status code attribute is not the integer 200: %v", dp.GetAttributes())
			}
			wantCounts := []uint64{1, 2, 1}
			if dp.GetCount() != 4 || dp.GetSum() != 6.25 || len(dp.GetBucketCounts()) != 3 || len(dp.GetExplicitBounds()) != 2 {
				t.Fatalf("histogram point: %v", dp)
			}
			for i, w := range wantCounts {
				if dp.GetBucketCounts()[i] != w {
					t.Errorf("bucket %d: %d, want %d", i, dp.GetBucketCounts()[i], w)
				}
			}
		})
	}
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	return m
}

// A config-observability change moves the export: from a gRPC receiver to an HTTP one, then off.
func TestMetricsExporterApply(t *testing.T) {
	ctx := context.Background()
	reg := testRegistry()
	grpcRcv, grpcEP := startReceiver(t, ProtocolGRPC)
	httpRcv, httpEP := startReceiver(t, ProtocolHTTP)
	e := NewMetricsExporter(Identity{Service: "autoscaler"}, reg)
	t.Cleanup(func() { _ = e.Shutdown(ctx) })
	steps := []struct {
		data               map[string]string
		active, changed    bool
		wantGRPC, wantHTTP int
	}{
		{data: map[string]string{}, changed: true},
		{data: map[string]string{}},
		{data: map[string]string{"metrics-protocol": "grpc", "metrics-endpoint": grpcEP}, active: true, changed: true, wantGRPC: 1},
		{data: map[string]string{"metrics-protocol": "grpc", "metrics-endpoint": grpcEP}, active: true, wantGRPC: 2}, // unchanged: same export
		// the change flushes the gRPC export a last time, then HTTP takes over
		{data: map[string]string{"metrics-protocol": "http/protobuf", "metrics-endpoint": httpEP}, active: true, changed: true, wantGRPC: 3, wantHTTP: 1},
		{data: map[string]string{"metrics-protocol": "prometheus"}, changed: true, wantGRPC: 3, wantHTTP: 2},
	}
	for i, s := range steps {
		cfg, err := NewConfigFromMap(s.data)
		if err != nil {
			t.Fatal(err)
		}
		changed, err := e.Apply(ctx, cfg)
		if err != nil || changed != s.changed {
			t.Fatalf("step %d: changed %v, %v", i, changed, err)
		}
		if e.Active() != s.active {
			t.Fatalf("step %d: active %v", i, e.Active())
		}
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if grpcRcv.count() != s.wantGRPC || httpRcv.count() != s.wantHTTP {
			t.Fatalf("step %d: gRPC got %d exports, HTTP %d; want %d, %d", i, grpcRcv.count(), httpRcv.count(), s.wantGRPC, s.wantHTTP)
		}
	}
}

func TestMetricsExportOff(t *testing.T) {
	for _, p := range []string{ProtocolNone, ProtocolPrometheus} {
		exp, err := NewMetricsExport(context.Background(), &Config{MetricsProtocol: p}, Identity{}, prometheus.NewRegistry())
		if exp != nil || err != nil {
			t.Errorf("%s: %v, %v", p, exp, err)
		}
		if err := exp.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
	if _, err := NewConfigFromMap(map[string]string{"metrics-export-interval": "soon"}); err == nil {
		t.Error("a bad metrics-export-interval was accepted")
	}
}
