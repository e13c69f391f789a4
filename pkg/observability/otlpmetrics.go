package observability

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
)

// MetricsExport pushes a Prometheus registry's metrics over OTLP (gRPC or HTTP/protobuf) every export
// interval, when config-observability's metrics-protocol asks for it. The Prometheus endpoint is served
// beside it in any case. A nil *MetricsExport exports nothing.
//
// The instruments stay Prometheus instruments (one registry, one set of names): each export gathers
// the registry and sends its families as OTLP data, cumulative, with the family's name and labels.
type MetricsExport struct {
	provider *sdkmetric.MeterProvider
}

// NewMetricsExport starts the export cfg asks for, or returns nil when metrics-protocol is none or
// prometheus.
func NewMetricsExport(ctx context.Context, cfg *Config, id Identity, g prometheus.Gatherer) (*MetricsExport, error) {
	var exp sdkmetric.Exporter
	var err error
	switch cfg.MetricsProtocol {
	case ProtocolGRPC:
		var opts []otlpmetricgrpc.Option
		if cfg.MetricsEndpoint != "" {
			opts = append(opts, otlpmetricgrpc.WithEndpointURL(endpointURL(cfg.MetricsEndpoint)))
		}
		exp, err = otlpmetricgrpc.New(ctx, opts...)
	case ProtocolHTTP:
		var opts []otlpmetrichttp.Option
		if cfg.MetricsEndpoint != "" {
			opts = append(opts, otlpmetrichttp.WithEndpointURL(endpointURL(cfg.MetricsEndpoint)))
		}
		exp, err = otlpmetrichttp.New(ctx, opts...)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics exporter %s: %w", cfg.MetricsProtocol, err)
	}
	var ropts []sdkmetric.PeriodicReaderOption
	if cfg.MetricsExportInterval > 0 {
		ropts = append(ropts, sdkmetric.WithInterval(cfg.MetricsExportInterval))
	}
	ropts = append(ropts, sdkmetric.WithProducer(&gatherProducer{g: g, start: time.Now()}))
	res := resource.NewSchemaless(
		attribute.String("service.name", id.Service),
		attribute.String("k8s.pod.name", id.PodName),
		attribute.String("k8s.namespace.name", id.Namespace),
	)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, ropts...)), sdkmetric.WithResource(res))
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

// scope names the data Thaw exports.
var scope = instrumentation.Scope{Name: "github.com/thaw-dev/thaw"}

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
	sm := metricdata.ScopeMetrics{Scope: scope}
	for _, f := range families {
		if m, ok := convert(f, p.start, now); ok {
			sm.Metrics = append(sm.Metrics, m)
		}
	}
	return []metricdata.ScopeMetrics{sm}, nil
}

func labels(m *dto.Metric) attribute.Set {
	kvs := make([]attribute.KeyValue, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		kvs = append(kvs, attribute.String(l.GetName(), l.GetValue()))
	}
	return attribute.NewSet(kvs...)
}

// convert maps a family onto OTLP: counters to monotonic cumulative sums, gauges and untyped to
// gauges, histograms to cumulative histograms (Prometheus' cumulative buckets made per-bucket).
// Summaries have no OTLP twin in the SDK's data model and are left to the Prometheus endpoint.
func convert(f *dto.MetricFamily, start, now time.Time) (metricdata.Metrics, bool) {
	out := metricdata.Metrics{Name: f.GetName(), Description: f.GetHelp()}
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		s := metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
		for _, m := range f.GetMetric() {
			s.DataPoints = append(s.DataPoints, metricdata.DataPoint[float64]{Attributes: labels(m), StartTime: start, Time: now, Value: m.GetCounter().GetValue()})
		}
		out.Data = s
	case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
		g := metricdata.Gauge[float64]{}
		for _, m := range f.GetMetric() {
			v := m.GetGauge().GetValue()
			if f.GetType() == dto.MetricType_UNTYPED {
				v = m.GetUntyped().GetValue()
			}
			g.DataPoints = append(g.DataPoints, metricdata.DataPoint[float64]{Attributes: labels(m), Time: now, Value: v})
		}
		out.Data = g
	case dto.MetricType_HISTOGRAM:
		h := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
		for _, m := range f.GetMetric() {
			ph := m.GetHistogram()
			dp := metricdata.HistogramDataPoint[float64]{Attributes: labels(m), StartTime: start, Time: now,
				Count: ph.GetSampleCount(), Sum: ph.GetSampleSum()}
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
		out.Data = h
	default:
		return out, false
	}
	return out, true
}
