package observability

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewConfigFromMap(t *testing.T) {
	tests := []struct {
		name    string
		data    map[string]string
		want    Config
		wantErr string
	}{
		{name: "defaults", data: nil, want: *Defaults()},
		{name: "all set", data: map[string]string{
			"metrics-protocol": "prometheus", "tracing-protocol": "grpc", "tracing-endpoint": "otel:4317",
			"metrics-export-interval": "30s",
			"tracing-sampling-rate":   "0.5", "runtime-profiling": "enabled",
			"logging.enable-request-log": "true", "logging.request-log-template": "{{.Request.URL}}",
		}, want: Config{MetricsProtocol: "prometheus", MetricsExportInterval: 30 * time.Second, TracingProtocol: "grpc", TracingEndpoint: "otel:4317",
			TracingSamplingRate: 0.5, RuntimeProfiling: true, EnableRequestLog: true, RequestLogTemplate: "{{.Request.URL}}"}},
		{name: "bad metrics protocol", data: map[string]string{"metrics-protocol": "opencensus"}, wantErr: "metrics-protocol"},
		{name: "bad tracing protocol", data: map[string]string{"tracing-protocol": "zipkin"}, wantErr: "tracing-protocol"},
		{name: "bad rate", data: map[string]string{"tracing-sampling-rate": "2"}, wantErr: "tracing-sampling-rate"},
		{name: "bad profiling", data: map[string]string{"runtime-profiling": "yes"}, wantErr: "runtime-profiling"},
		{name: "bad request log", data: map[string]string{"logging.enable-request-log": "maybe"}, wantErr: "enable-request-log"},
		// upstream's Validate rules
		{name: "otlp without endpoint", data: map[string]string{"metrics-protocol": "grpc"}, wantErr: "metrics-endpoint should be set"},
		{name: "none with endpoint", data: map[string]string{"metrics-endpoint": "otel:4317"}, wantErr: "should not be set"},
		{name: "prometheus endpoint not host:port", data: map[string]string{"metrics-protocol": "prometheus", "metrics-endpoint": "9091"}, wantErr: "host:port"},
		{name: "ip:port without scheme", data: map[string]string{"metrics-protocol": "http/protobuf", "metrics-endpoint": "10.0.0.1:4318"}, wantErr: "metrics-endpoint"},
		{name: "negative interval", data: map[string]string{"metrics-export-interval": "-1s"}, wantErr: "metrics-export-interval"},
		{name: "tracing without endpoint", data: map[string]string{"tracing-protocol": "http/protobuf"}, wantErr: "tracing-endpoint should be set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewConfigFromMap(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || *got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestMetricsServer(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "thaw_test_total"})
	reg.MustRegister(c)
	c.Inc()
	srv := httptest.NewServer(NewMetricsServer(":0", reg, Identity{Service: "activator"}).Handler)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "thaw_test_total 1") || !strings.Contains(string(b), "go_goroutines") ||
		!strings.Contains(string(b), `target_info{k8s_namespace_name="",service_name="activator"`) ||
		!strings.Contains(string(b), "go_goroutine_count{otel_scope_name=") {
		t.Fatalf("metrics page lacks samples:\n%.500s", b)
	}
}

func TestProfilingToggle(t *testing.T) {
	p := NewProfiling(false)
	srv := httptest.NewServer(p)
	defer srv.Close()
	for _, on := range []bool{false, true, false} {
		p.SetEnabled(on)
		resp, err := http.Get(srv.URL + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Fatalf("enabled=%v: status %d, want %d", on, resp.StatusCode, want)
		}
	}
}

func TestTracingStdoutAndPropagation(t *testing.T) {
	if tr, err := NewTracing(context.Background(), Defaults(), Identity{}, io.Discard); tr != nil || err != nil {
		t.Fatalf("none: got %v %v", tr, err)
	}
	var buf bytes.Buffer
	cfg := &Config{TracingProtocol: ProtocolStdout, TracingSamplingRate: 1}
	tr, err := NewTracing(context.Background(), cfg, Identity{Service: "activator", PodName: "p", Namespace: "knative-serving"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	defer backend.Close()
	ctx, span := tr.Provider.Tracer("t").Start(context.Background(), "parent")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, backend.URL+"/x", nil)
	resp, err := (&http.Client{Transport: tr.WrapTransport(http.DefaultTransport)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	span.End()
	tp := <-got
	if !strings.HasPrefix(tp, "00-"+span.SpanContext().TraceID().String()) {
		t.Fatalf("traceparent %q does not carry trace %s", tp, span.SpanContext().TraceID())
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Name":"parent"`, `"Name":"GET /x"`, `"service.name"`} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("stdout spans lack %s:\n%.1000s", want, buf.String())
		}
	}
}

func TestEndpointURL(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "otel-collector.observability:4317", want: "https://otel-collector.observability:4317"},
		{in: "http://otel:4318/v1/metrics", want: "http://otel:4318/v1/metrics"},
		{in: "https://otel:4317", want: "https://otel:4317"},
		{in: "10.0.0.1:4317", err: "colon"},
		{in: "", want: ""},
	} {
		got, err := endpointURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want one with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}
