package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator"
	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/statsink"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/observability"
)

// namesRegisterer records the family names of what is registered with it.
type namesRegisterer struct {
	prometheus.Registerer
	names []string
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (n *namesRegisterer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			n.names = append(n.names, m[1])
		}
	}
	return n.Registerer.Register(c)
}

func (n *namesRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := n.Register(c); err != nil {
			panic(err)
		}
	}
}

// Every family the activator registers is either Thaw's own (thaw_*) or reproduces an upstream
// instrument, so that OTLP carries it under upstream's name.
func TestActivatorFamiliesAreUpstreamInstruments(t *testing.T) {
	reg := &namesRegisterer{Registerer: prometheus.NewRegistry()}
	activator.NewMetrics(reg)
	coldstart.NewTracker(coldstart.TrackerOptions{Registerer: reg})
	sink := statsink.New("ws://127.0.0.1:1", statsink.Options{Registerer: reg}, clock.RealClock{}, zaptest.NewLogger(t).Sugar())
	concurrency.New("p", sink, clock.RealClock{}, reg)
	observability.NewHTTPClientMetrics(reg)
	if len(reg.names) < 6 {
		t.Fatalf("only %v registered", reg.names)
	}
	for _, n := range reg.names {
		if _, ok := observability.Lookup(n); !ok && !strings.HasPrefix(n, "thaw_") {
			t.Errorf("%s is neither an upstream instrument nor Thaw's own", n)
		}
	}
}

// otlpSink is an OTLP/HTTP metrics receiver keeping the metric names of each export.
type otlpSink struct {
	mu      sync.Mutex
	exports [][]string
}

func (s *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	req := &colmetricspb.ExportMetricsServiceRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var names []string
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				names = append(names, m.GetName())
			}
		}
	}
	s.mu.Lock()
	s.exports = append(s.exports, names)
	s.mu.Unlock()
	out, _ := proto.Marshal(&colmetricspb.ExportMetricsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (s *otlpSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.exports)
}

// A config-observability change reaches the OTLP export through the activator's ConfigMap handler; an
// invalid one leaves the export as it was.
func TestMetricsExportFollowsConfigObservability(t *testing.T) {
	rcv := &otlpSink{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	reg := observability.NewRegistry()
	activator.NewMetrics(reg)
	exp := observability.NewMetricsExporter(observability.Identity{Service: component}, reg)
	defer exp.Shutdown(context.Background())
	logger := zaptest.NewLogger(t).Sugar()
	calls := 0
	h := withMetricsExport(func(*corev1.ConfigMap) error { calls++; return nil }, exp, logger)
	cm := func(data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config-observability"}, Data: data}
	}

	h(cm(map[string]string{"metrics-protocol": "http/protobuf", "metrics-endpoint": srv.URL + "/v1/metrics"}))
	if !exp.Active() {
		t.Fatal("http/protobuf did not start the export")
	}
	h(cm(map[string]string{"metrics-protocol": "grpc"})) // invalid: no endpoint
	if err := exp.Flush(context.Background()); err != nil || !exp.Active() {
		t.Fatalf("an invalid ConfigMap changed the export: active %v, %v", exp.Active(), err)
	}
	if rcv.count() != 1 || !strings.Contains(strings.Join(rcv.exports[0], " "), "go.goroutine.count") {
		t.Fatalf("exports %v", rcv.exports)
	}
	h(cm(map[string]string{"metrics-protocol": "prometheus"}))
	if exp.Active() || rcv.count() != 2 {
		t.Fatalf("prometheus: active %v, %d exports (want the last flush only)", exp.Active(), rcv.count())
	}
	if calls != 3 {
		t.Fatalf("the observability handler ran %d times, want 3", calls)
	}
}
