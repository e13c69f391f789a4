package observability

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// A real client-go request reaches both client metrics, labelled as upstream's are (the path as
// client-go's template).
func TestKubernetesClientMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"config-observability","namespace":"knative-serving"}}`))
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(KubernetesMetrics()...)
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().ConfigMaps("knative-serving").Get(context.Background(), "config-observability", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	fams, err := NewGatherer(reg, Identity{}).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got = append(got, f.GetName()+"{"+strings.Join(ls, ",")+"}")
		}
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`http_client_request_duration_seconds{http_request_method=GET,otel_scope_name=knative.dev/pkg/observability/metrics/k8s,otel_scope_schema_url=,otel_scope_version=,server_address=127.0.0.1,`,
		`url_scheme=http,url_template=/api/v1/namespaces/{namespace}/configmaps/{name}}`,
		`kn_k8s_client_http_response_status_code_total{http_request_method=GET,http_response_status_code=200,`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no %s in\n%s", want, all)
		}
	}
}
