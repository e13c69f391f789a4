package lifecycle

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// otlpReceiver is an OTLP/HTTP metrics receiver keeping each export's metric names with the names'
// scopes, and their resource's service.name.
type otlpReceiver struct {
	mu      sync.Mutex
	exports []map[string]string
	service string
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	req := &colmetricspb.ExportMetricsServiceRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	names := map[string]string{}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		for _, kv := range rm.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				o.service = kv.GetValue().GetStringValue()
			}
		}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				names[m.GetName()] = sm.GetScope().GetName()
			}
		}
	}
	o.exports = append(o.exports, names)
	out, _ := proto.Marshal(&colmetricspb.ExportMetricsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (o *otlpReceiver) last() (map[string]string, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.exports) == 0 {
		return nil, ""
	}
	return o.exports[len(o.exports)-1], o.service
}

// config-observability turns the OTLP export on while the autoscaler runs; it carries upstream's
// autoscaler, workqueue and runtime instruments, and the Prometheus page shows them as upstream's does.
func TestMetricsOTLPAndPrometheus(t *testing.T) {
	rcv := &otlpReceiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	h := start(t, nil)
	ctx := context.Background()
	if _, err := h.kube.CoreV1().ConfigMaps(sysNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: "config-observability"},
		Data: map[string]string{"metrics-protocol": "http/protobuf", "metrics-endpoint": srv.URL + "/v1/metrics",
			"metrics-export-interval": "100ms"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"kn.revision.pods.requested":   "knative.dev/serving/pkg/autoscaler",
		"kn.workqueue.adds":            "knative.dev/pkg/observability/metrics/k8s",
		"go.goroutine.count":           "go.opentelemetry.io/contrib/instrumentation/runtime",
		"thaw_autoscaler_buckets_held": "github.com/thaw-dev/thaw",
	}
	eventually(t, "an OTLP export with upstream's instruments", func() bool {
		got, service := rcv.last()
		for n, scope := range want {
			if got[n] != scope {
				return false
			}
		}
		return service == Component
	})

	body := scrape(t, "http://"+h.addrs[1]+"/metrics")
	for _, re := range []string{
		`target_info\{k8s_namespace_name="knative-serving",k8s_pod_name="autoscaler-0",service_name="autoscaler",`,
		`kn_revision_pods_requested\{[^}]*otel_scope_name="knative.dev/serving/pkg/autoscaler"`,
		`kn_workqueue_adds_total\{name="knative.dev.serving.pkg.reconciler.autoscaling.kpa.Reconciler",otel_scope_name="knative.dev/pkg/observability/metrics/k8s",`,
		`go_memory_used_bytes\{go_memory_type="stack",otel_scope_name=`,
		`promhttp_metric_handler_requests_total\{code="200"\}`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("metrics page lacks %s", re)
		}
	}
	if strings.Contains(body, "thaw_autoscaler_buckets_held{otel_scope") {
		t.Error("Thaw's own families carry upstream's scope labels")
	}
}
