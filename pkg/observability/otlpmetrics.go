package observability

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// MetricsExport pushes a Prometheus registry's metrics over OTLP (gRPC or HTTP/protobuf) every export
// interval, when config-observability's metrics-protocol asks for it. The Prometheus endpoint is served
// beside it in any case. A nil *MetricsExport exports nothing.
//
// Thaw's instruments are client_golang instruments in one registry, which the Prometheus page serves as
// is. Each export gathers that registry and sends each family as the upstream OTel instrument it
// reproduces (Lookup: name, unit, kind, integer or not, scope; labels back to attribute keys), so the
// two paths cannot drift apart and an OTLP backend sees upstream's names. Thaw's own thaw_* families
// go along under their Prometheus names; client_golang's go_*/process_* collectors, which upstream
// has only on its Prometheus page, do not.
type MetricsExport struct {
	provider *sdkmetric.MeterProvider
}

// NewMetricsExport starts the export cfg asks for, or returns nil when metrics-protocol is none or
// prometheus. As upstream, OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT overrides metrics-endpoint and
// OTEL_METRIC_EXPORT_INTERVAL overrides metrics-export-interval.
func NewMetricsExport(ctx context.Context, cfg *Config, id Identity, g prometheus.Gatherer) (*MetricsExport, error) {
	var exp sdkmetric.Exporter
	ep, err := endpointURL(cfg.MetricsEndpoint)
	if err != nil {
		return nil, fmt.Errorf("metrics-endpoint: %w", err)
	}
	useEP := ep != "" && !envEndpoint("METRICS")
	switch cfg.MetricsProtocol {
	case ProtocolGRPC:
		var opts []otlpmetricgrpc.Option
		if useEP {
			opts = append(opts, otlpmetricgrpc.WithEndpointURL(ep))
		}
		exp, err = otlpmetricgrpc.New(ctx, opts...)
	case ProtocolHTTP:
		var opts []otlpmetrichttp.Option
		if useEP {
			opts = append(opts, otlpmetrichttp.WithEndpointURL(ep))
		}
		exp, err = otlpmetrichttp.New(ctx, opts...)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics exporter %s: %w", cfg.MetricsProtocol, err)
	}
	var ropts []sdkmetric.PeriodicReaderOption
	if cfg.MetricsExportInterval > 0 && os.Getenv("OTEL_METRIC_EXPORT_INTERVAL") == "" {
		ropts = append(ropts, sdkmetric.WithInterval(cfg.MetricsExportInterval))
	}
	ropts = append(ropts, sdkmetric.WithProducer(&gatherProducer{g: g, start: time.Now()}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, ropts...)),
		sdkmetric.WithResource(Resource(id)))
	return &MetricsExport{provider: mp}, nil
}

// Flush exports now.
func (m *MetricsExport) Flush(ctx context.Context) error {
	if m == nil {
		return nil
	}
	return m.provider.ForceFlush(ctx)
}

// Shutdown exports a last time and stops.
func (m *MetricsExport) Shutdown(ctx context.Context) error {
	if m == nil {
		return nil
	}
	return m.provider.Shutdown(ctx)
}

// MetricsExporter keeps the OTLP export in line with config-observability as it changes: Apply starts,
// replaces or stops it. Upstream reads metrics-* once at start; Thaw applies a change without a restart.
type MetricsExporter struct {
	id Identity
	g  prometheus.Gatherer

	mu      sync.Mutex
	cur     *MetricsExport
	applied bool
	last    [3]string // protocol, endpoint, interval last applied
}

// NewMetricsExporter returns an exporter of g's metrics, exporting nothing until Apply.
func NewMetricsExporter(id Identity, g prometheus.Gatherer) *MetricsExporter {
	return &MetricsExporter{id: id, g: g}
}

// Apply makes the export what cfg says and reports whether that changed anything. An unchanged
// config is a no-op; otherwise the current export flushes and stops (within ctx) before the new one
// starts. On error nothing is exported.
func (e *MetricsExporter) Apply(ctx context.Context, cfg *Config) (bool, error) {
	key := [3]string{cfg.MetricsProtocol, cfg.MetricsEndpoint, cfg.MetricsExportInterval.String()}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.applied && key == e.last {
		return false, nil
	}
	if e.cur != nil {
		_ = e.cur.Shutdown(ctx) // a collector gone away must not keep the new config from applying
		e.cur = nil
	}
	e.applied, e.last = true, key
	exp, err := NewMetricsExport(ctx, cfg, e.id, e.g)
	if err != nil {
		return true, err
	}
	e.cur = exp
	return true, nil
}

// Active reports whether OTLP is being exported.
func (e *MetricsExporter) Active() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur != nil
}

// Flush exports now, if exporting.
func (e *MetricsExporter) Flush(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur.Flush(ctx)
}

// Shutdown exports a last time and stops.
func (e *MetricsExporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.cur.Shutdown(ctx)
	e.cur = nil
	return err
}

// gatherProducer turns a registry's families into OTLP data at each export.
type gatherProducer struct {
	g     prometheus.Gatherer
	start time.Time
}

func (p *gatherProducer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	families, err := p.g.Gather()
	if err != nil && len(families) == 0 {
		return nil, err
	}
	now := time.Now()
	var out []metricdata.ScopeMetrics
	index := map[Scope]int{}
	for _, f := range families {
		in, known := Lookup(f.GetName())
		if !known && !strings.HasPrefix(f.GetName(), "thaw_") {
			continue
		}
		if sparseFamilies[f.GetName()] {
			for _, m := range f.GetMetric() {
				m.Label = dropEmpty(m.Label)
			}
		}
		for _, part := range byScope(f, in.Scope) {
			fin := in
			fin.Scope = part.scope
			m, ok := convert(part.family, fin, p.start, now)
			if !ok {
				continue
			}
			i, seen := index[part.scope]
			if !seen {
				i = len(out)
				index[part.scope] = i
				out = append(out, metricdata.ScopeMetrics{Scope: instrumentation.Scope{Name: part.scope.Name, Version: part.scope.Version}})
			}
			out[i].Metrics = append(out[i].Metrics, m)
		}
	}
	return out, nil
}

type scopedFamily struct {
	scope  Scope
	family *dto.MetricFamily
}

// byScope splits a family whose series name their scopes (otel_scope_name) into one family per scope;
// a family whose series do not is def's alone.
func byScope(f *dto.MetricFamily, def Scope) []scopedFamily {
	var parts []scopedFamily
	at := map[Scope]int{}
	for _, m := range f.GetMetric() {
		sc, named := seriesScope(m)
		if !named {
			sc = def
		}
		i, ok := at[sc]
		if !ok {
			i = len(parts)
			at[sc] = i
			parts = append(parts, scopedFamily{scope: sc, family: &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}})
		}
		parts[i].family.Metric = append(parts[i].family.Metric, m)
	}
	return parts
}

// attributes turns a series' labels into upstream's attributes: keys as upstream spells them, status
// codes and ports as integers.
func attributes(m *dto.Metric) attribute.Set {
	kvs := make([]attribute.KeyValue, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		if l.GetName() == "otel_scope_name" {
			continue // the scope, not an attribute
		}
		k := attributeKey(l.GetName())
		if k == "otel.metric.overflow" {
			kvs = append(kvs, attribute.Bool(k, l.GetValue() == "true"))
			continue
		}
		if intAttributes[k] {
			if n, err := strconv.ParseInt(l.GetValue(), 10, 64); err == nil {
				kvs = append(kvs, attribute.Int64(k, n))
				continue
			}
		}
		kvs = append(kvs, attribute.String(k, l.GetValue()))
	}
	return attribute.NewSet(kvs...)
}

func value(f *dto.MetricFamily, m *dto.Metric) float64 {
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return m.GetGauge().GetValue()
}

// convert maps a family onto the OTLP data of instrument in: counters to monotonic cumulative sums,
// up-down counters to non-monotonic ones, gauges to gauges, histograms to cumulative histograms
// (Prometheus' cumulative buckets made per-bucket). Summaries have no OTLP twin in the SDK's data
// model and are left to the Prometheus endpoint.
func convert(f *dto.MetricFamily, in Instrument, start, now time.Time) (metricdata.Metrics, bool) {
	out := metricdata.Metrics{Name: in.Name, Unit: in.Unit, Description: f.GetHelp()}
	kind := in.Kind
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		kind = KindCounter
	case dto.MetricType_HISTOGRAM:
		kind = KindHistogram
	case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
		if kind != KindUpDownCounter {
			kind = KindGauge
		}
	default:
		return out, false
	}
	ms := f.GetMetric()
	switch kind {
	case KindCounter, KindUpDownCounter:
		mono := kind == KindCounter
		if in.Int {
			s := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: mono}
			for _, m := range ms {
				s.DataPoints = append(s.DataPoints, metricdata.DataPoint[int64]{Attributes: attributes(m), StartTime: start, Time: now, Value: int64(value(f, m))})
			}
			out.Data = s
		} else {
			s := metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: mono}
			for _, m := range ms {
				s.DataPoints = append(s.DataPoints, metricdata.DataPoint[float64]{Attributes: attributes(m), StartTime: start, Time: now, Value: value(f, m)})
			}
			out.Data = s
		}
	case KindGauge:
		if in.Int {
			g := metricdata.Gauge[int64]{}
			for _, m := range ms {
				g.DataPoints = append(g.DataPoints, metricdata.DataPoint[int64]{Attributes: attributes(m), Time: now, Value: int64(value(f, m))})
			}
			out.Data = g
		} else {
			g := metricdata.Gauge[float64]{}
			for _, m := range ms {
				g.DataPoints = append(g.DataPoints, metricdata.DataPoint[float64]{Attributes: attributes(m), Time: now, Value: value(f, m)})
			}
			out.Data = g
		}
	case KindHistogram:
		if in.Int {
			out.Data = histogram[int64](ms, start, now)
		} else {
			out.Data = histogram[float64](ms, start, now)
		}
	}
	return out, true
}

// histogram converts Prometheus histograms (cumulative buckets) to OTel's (per-bucket counts).
func histogram[N int64 | float64](ms []*dto.Metric, start, now time.Time) metricdata.Histogram[N] {
	h := metricdata.Histogram[N]{Temporality: metricdata.CumulativeTemporality}
	for _, m := range ms {
		ph := m.GetHistogram()
		dp := metricdata.HistogramDataPoint[N]{Attributes: attributes(m), StartTime: start, Time: now,
			Count: ph.GetSampleCount(), Sum: N(ph.GetSampleSum())}
		var prev uint64
		for _, b := range ph.GetBucket() {
			if math.IsInf(b.GetUpperBound(), 1) {
				continue // the +Inf bucket is the overflow bucket below
			}
			dp.Bounds = append(dp.Bounds, b.GetUpperBound())
			dp.BucketCounts = append(dp.BucketCounts, b.GetCumulativeCount()-prev)
			prev = b.GetCumulativeCount()
		}
		dp.BucketCounts = append(dp.BucketCounts, ph.GetSampleCount()-prev)
		h.DataPoints = append(h.DataPoints, dp)
	}
	return h
}
