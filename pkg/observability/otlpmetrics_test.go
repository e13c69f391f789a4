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
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
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

// metrics indexes the last request's metrics by name, and its resource's attributes.
func (r *receiver) last(t *testing.T) (map[string]*metricspb.Metric, map[string]string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("nothing received")
	}
	out, res := map[string]*metricspb.Metric{}, map[string]string{}
	for _, rm := range r.reqs[len(r.reqs)-1].GetResourceMetrics() {
		for _, kv := range rm.GetResource().GetAttributes() {
			res[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				out[m.GetName()] = m
			}
		}
	}
	return out, res
}

func TestMetricsExportOTLP(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "thaw_test_requests_total", Help: "requests"}, []string{"code"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "thaw_test_inflight"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "thaw_test_latency_seconds", Buckets: []float64{0.1, 1}})
	reg.MustRegister(c, g, h)
	c.WithLabelValues("200").Add(3)
	g.Set(7)
	for _, v := range []float64{0.05, 0.5, 0.7, 5} {
		h.Observe(v)
	}

	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(protocol, func(t *testing.T) {
			rcv := &receiver{}
			var endpoint string
			if protocol == ProtocolGRPC {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv := grpc.NewServer()
				colmetricspb.RegisterMetricsServiceServer(srv, rcv)
				go func() { _ = srv.Serve(lis) }()
				t.Cleanup(srv.Stop)
				endpoint = lis.Addr().String() // bare host:port, as config-observability often says
			} else {
				srv := httptest.NewServer(rcv)
				t.Cleanup(srv.Close)
				endpoint = srv.URL + "/v1/metrics"
			}
			cfg, err := NewConfigFromMap(map[string]string{"metrics-protocol": protocol, "metrics-endpoint": endpoint, "metrics-export-interval": "1h"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			exp, err := NewMetricsExport(ctx, cfg, Identity{Service: "activator", PodName: "p", Namespace: "knative-serving"}, reg)
			if err != nil || exp == nil {
				t.Fatalf("NewMetricsExport = %v, %v", exp, err)
			}
			t.Cleanup(func() { _ = exp.Shutdown(ctx) })
			if err := exp.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got, res := rcv.last(t)
			if res["service.name"] != "activator" || res["k8s.pod.name"] != "p" {
				t.Errorf("resource %v", res)
			}
			sum := got["thaw_test_requests_total"].GetSum()
			if sum == nil || !sum.GetIsMonotonic() || len(sum.GetDataPoints()) != 1 || sum.GetDataPoints()[0].GetAsDouble() != 3 ||
				sum.GetDataPoints()[0].GetAttributes()[0].GetValue().GetStringValue() != "200" {
				t.Errorf("counter: %v", got["thaw_test_requests_total"])
			}
			if gg := got["thaw_test_inflight"].GetGauge(); gg == nil || gg.GetDataPoints()[0].GetAsDouble() != 7 {
				t.Errorf("gauge: %v", got["thaw_test_inflight"])
			}
			hh := got["thaw_test_latency_seconds"].GetHistogram()
			if hh == nil || len(hh.GetDataPoints()) != 1 {
				t.Fatalf("histogram: %v", got["thaw_test_latency_seconds"])
			}
			dp := hh.GetDataPoints()[0]
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
