package observability

import (
	"context"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	k8smetrics "knative.dev/pkg/observability/metrics/k8s"
	knresource "knative.dev/pkg/observability/resource"
)

// upstreamPipeline is upstream's Prometheus path: OTel instruments read by OTel's Prometheus exporter
// with the translation knative.dev/pkg configures, on a registry of the test's own.
func upstreamPipeline(t *testing.T) (*prometheus.Registry, *sdkmetric.MeterProvider) {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SYSTEM_NAMESPACE", "knative-serving")
	t.Setenv("POD_NAME", "activator-0")
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(knresource.Default("activator")))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return reg, mp
}

// shape is a family as compared: type, and each series' labels (le excluded) with its count or value.
func shape(t *testing.T, g prometheus.Gatherer, keep func(string) bool) map[string]string {
	t.Helper()
	return shapeSeries(t, g, keep, nil)
}

// shapeSeries is shape of the series whose labels ("name=value") keepSeries keeps.
func shapeSeries(t *testing.T, g prometheus.Gatherer, keep func(string) bool, keepSeries func([]string) bool) map[string]string {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range fams {
		if !keep(f.GetName()) {
			continue
		}
		var series []string
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := ""
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				v = "count=" + itoa(m.GetHistogram().GetSampleCount()) + " buckets=" + itoa(uint64(len(m.GetHistogram().GetBucket())))
			case dto.MetricType_COUNTER:
				v = ftoa(m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				v = ftoa(m.GetGauge().GetValue())
			}
			if keepSeries != nil && !keepSeries(ls) {
				continue
			}
			series = append(series, "{"+strings.Join(ls, ",")+"} "+v)
		}
		sort.Strings(series)
		out[f.GetName()] = f.GetType().String() + " " + strings.Join(series, " ")
	}
	return out
}

func itoa(n uint64) string  { return strconv.FormatUint(n, 10) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// The Kubernetes client and workqueue metrics look on Thaw's page as on upstream's, series by series,
// for the same calls: the same families, types, labels (scope labels included) and counts.
func TestKubernetesMetricsMatchUpstream(t *testing.T) {
	upReg, mp := upstreamPipeline(t)
	wq, err := k8smetrics.NewWorkqueueMetricsProvider(k8smetrics.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := k8smetrics.NewClientMetricProvider(k8smetrics.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	thawReg := prometheus.NewRegistry()
	km := newKubeMetrics()
	thawReg.MustRegister(km.collectors()...)

	u, _ := url.Parse("https://10.96.0.1:443/api/v1/namespaces/knative-serving/configmaps")
	ctx := context.Background()
	// The same calls on both providers, as a workqueue and client-go make them.
	for _, side := range []struct {
		depth, adds, retries func(string) (inc func())
		latency, work        func(string) func(float64)
		unfinished, longest  func(string) func(float64)
		observe              func()
		result               func(code string)
	}{
		{
			depth:      func(n string) func() { return wq.NewDepthMetric(n).Inc },
			adds:       func(n string) func() { return wq.NewAddsMetric(n).Inc },
			retries:    func(n string) func() { return wq.NewRetriesMetric(n).Inc },
			latency:    func(n string) func(float64) { return wq.NewLatencyMetric(n).Observe },
			work:       func(n string) func(float64) { return wq.NewWorkDurationMetric(n).Observe },
			unfinished: func(n string) func(float64) { return wq.NewUnfinishedWorkSecondsMetric(n).Set },
			longest:    func(n string) func(float64) { return wq.NewLongestRunningProcessorSecondsMetric(n).Set },
			observe:    func() { cp.RequestLatencyMetric().Observe(ctx, "get", *u, 3*time.Millisecond) },
			result:     func(code string) { cp.RequestResultMetric().Increment(ctx, code, "GET", "10.96.0.1:443") },
		},
		{
			depth:      func(n string) func() { return km.NewDepthMetric(n).Inc },
			adds:       func(n string) func() { return km.NewAddsMetric(n).Inc },
			retries:    func(n string) func() { return km.NewRetriesMetric(n).Inc },
			latency:    func(n string) func(float64) { return km.NewLatencyMetric(n).Observe },
			work:       func(n string) func(float64) { return km.NewWorkDurationMetric(n).Observe },
			unfinished: func(n string) func(float64) { return km.NewUnfinishedWorkSecondsMetric(n).Set },
			longest:    func(n string) func(float64) { return km.NewLongestRunningProcessorSecondsMetric(n).Set },
			observe:    func() { km.Observe(ctx, "get", *u, 3*time.Millisecond) },
			result:     func(code string) { kubeResults{km}.Increment(ctx, code, "GET", "10.96.0.1:443") },
		},
	} {
		side.depth("q")()
		side.depth("q")()
		side.adds("q")()
		side.retries("q")()
		side.latency("q")(0.02)
		side.work("q")(0.3)
		side.unfinished("q")(1.5)
		side.longest("q")(0.5)
		side.observe()
		side.result("200")
		side.result("404")
		side.result("404")
	}
	kube := func(n string) bool {
		return strings.HasPrefix(n, "kn_workqueue_") || strings.HasPrefix(n, "kn_k8s_") || strings.HasPrefix(n, "http_client_")
	}
	up := shape(t, upReg, kube)
	thaw := shape(t, NewGatherer(thawReg, Identity{}), kube)
	if len(up) != 9 {
		t.Fatalf("upstream's families: %v", up)
	}
	// The one deliberate difference: upstream labels the status code of 200s only (its parse check is
	// inverted), Thaw every code.
	const codes = "kn_k8s_client_http_response_status_code_total"
	if want := strings.Replace(up[codes], "{http_request_method=GET,otel_scope_name", "{http_request_method=GET,http_response_status_code=404,otel_scope_name", 1); thaw[codes] != want {
		t.Errorf("%s\n upstream: %s\n Thaw:     %s\n want:     %s", codes, up[codes], thaw[codes], want)
	}
	delete(up, codes)
	delete(thaw, codes)
	for n, s := range up {
		if thaw[n] != s {
			t.Errorf("%s\n upstream: %s\n Thaw:     %s", n, s, thaw[n])
		}
	}
	for n := range thaw {
		if _, ok := up[n]; !ok {
			t.Errorf("%s is Thaw's only", n)
		}
	}
	// target_info: the same resource.
	ti := func(n string) bool { return n == "target_info" }
	id := Identity{Service: "activator", PodName: "activator-0", Namespace: "knative-serving", Version: BuildVersion()}
	if u, th := shape(t, upReg, ti), shape(t, NewGatherer(thawReg, id), ti); u["target_info"] == "" || u["target_info"] != th["target_info"] {
		t.Errorf("target_info\n upstream: %s\n Thaw:     %s", u["target_info"], th["target_info"])
	}
}

// Every instrument of the table, declared as upstream declares it, comes out of upstream's exporter
// under the Prometheus name the table has, with the table's scope.
func TestInstrumentTableMatchesUpstreamExporter(t *testing.T) {
	reg, mp := upstreamPipeline(t)
	ctx := context.Background()
	for _, in := range instruments {
		m := mp.Meter(in.Scope.Name, metric.WithInstrumentationVersion(in.Scope.Version))
		unit := metric.WithUnit(in.Unit)
		var err error
		switch {
		case in.Kind == KindCounter && in.Int:
			var c metric.Int64Counter
			if c, err = m.Int64Counter(in.Name, unit); err == nil {
				c.Add(ctx, 1)
			}
		case in.Kind == KindCounter:
			var c metric.Float64Counter
			if c, err = m.Float64Counter(in.Name, unit); err == nil {
				c.Add(ctx, 1)
			}
		case in.Kind == KindUpDownCounter:
			var c metric.Int64UpDownCounter
			if c, err = m.Int64UpDownCounter(in.Name, unit); err == nil {
				c.Add(ctx, 1)
			}
		case in.Kind == KindHistogram && in.Int:
			var h metric.Int64Histogram
			if h, err = m.Int64Histogram(in.Name, unit); err == nil {
				h.Record(ctx, 1)
			}
		case in.Kind == KindHistogram:
			var h metric.Float64Histogram
			if h, err = m.Float64Histogram(in.Name, unit); err == nil {
				h.Record(ctx, 1)
			}
		case in.Int:
			var g metric.Int64Gauge
			if g, err = m.Int64Gauge(in.Name, unit); err == nil {
				g.Record(ctx, 1)
			}
		default:
			var g metric.Float64Gauge
			if g, err = m.Float64Gauge(in.Name, unit); err == nil {
				g.Record(ctx, 1)
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", in.Name, err)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range fams {
		for _, l := range f.GetMetric()[0].GetLabel() {
			if l.GetName() == "otel_scope_name" {
				got[f.GetName()] = l.GetValue()
			}
		}
	}
	for prom, in := range instruments {
		if got[prom] != in.Scope.Name {
			t.Errorf("%s (%s %q): upstream's exporter has no such family in scope %s", prom, in.Name, in.Unit, in.Scope.Name)
		}
	}
}
