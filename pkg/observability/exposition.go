package observability

import (
	"net/http"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"google.golang.org/protobuf/proto"
)

// Resource is the OTel resource upstream's components describe themselves with (knative.dev/pkg
// observability/resource.Default): the SDK's defaults plus service name and version, namespace and
// pod. It goes with OTLP data and becomes target_info on the Prometheus page.
func Resource(id Identity) *resource.Resource {
	attrs := []attribute.KeyValue{
		semconv.K8SNamespaceName(id.Namespace),
		semconv.ServiceVersion(id.Version),
		semconv.ServiceName(id.Service),
	}
	if id.PodName != "" {
		attrs = append(attrs, semconv.K8SPodName(id.PodName))
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, attrs...))
	if err != nil {
		// Only a schema URL conflict; the attributes are there regardless.
		return resource.NewSchemaless(attrs...)
	}
	return res
}

// BuildVersion is this binary's service.version as upstream reports its own: the VCS revision the
// binary was built from, 7 hex digits, "-dirty" when the tree had changes, else "unknown".
func BuildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) >= 40 {
		rev = rev[:7]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// upstreamGatherer presents a registry as upstream's Prometheus exporter does: each family that is an
// upstream OTel instrument carries its scope in otel_scope_name, otel_scope_version and
// otel_scope_schema_url, and target_info holds the resource's attributes.
type upstreamGatherer struct {
	g          prometheus.Gatherer
	targetInfo *dto.MetricFamily
}

// NewGatherer wraps g for the Prometheus page.
func NewGatherer(g prometheus.Gatherer, id Identity) prometheus.Gatherer {
	ti := &dto.MetricFamily{
		Name: proto.String("target_info"),
		Help: proto.String("Target metadata"),
		Type: dto.MetricType_GAUGE.Enum(),
	}
	m := &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(1)}}
	for _, kv := range Resource(id).Attributes() {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(strings.ReplaceAll(string(kv.Key), ".", "_")),
			Value: proto.String(kv.Value.Emit())})
	}
	sortLabels(m.Label)
	ti.Metric = []*dto.Metric{m}
	return &upstreamGatherer{g: g, targetInfo: ti}
}

func (u *upstreamGatherer) Gather() ([]*dto.MetricFamily, error) {
	fams, err := u.g.Gather()
	for _, f := range fams {
		if !scoped(f.GetName()) {
			continue
		}
		in, _ := Lookup(f.GetName())
		sparse := sparseFamilies[f.GetName()]
		for _, m := range f.GetMetric() {
			if sparse {
				m.Label = dropEmpty(m.Label)
			}
			// A series of a family that two scopes share names its own.
			sc, named := seriesScope(m)
			// A copy: the gathered labels may be the collector's own, and sorting or appending in
			// place would change them.
			m.Label = append(make([]*dto.LabelPair, 0, len(m.Label)+3), m.Label...)
			if !named {
				sc = in.Scope
				m.Label = append(m.Label, &dto.LabelPair{Name: proto.String("otel_scope_name"), Value: proto.String(sc.Name)})
			}
			m.Label = append(m.Label,
				&dto.LabelPair{Name: proto.String("otel_scope_schema_url"), Value: proto.String("")},
				&dto.LabelPair{Name: proto.String("otel_scope_version"), Value: proto.String(sc.Version)})
			sortLabels(m.Label)
		}
	}
	fams = append(fams, u.targetInfo)
	sort.Slice(fams, func(i, j int) bool { return fams[i].GetName() < fams[j].GetName() })
	return fams, err
}

// sparseFamilies hold series with different label sets, as upstream's do (client-go's and otelhttp's
// client requests): a client_golang family has one label set, so a series leaves the labels it does
// not have empty, and they are dropped from the page and from OTLP.
var sparseFamilies = map[string]bool{"http_client_request_duration_seconds": true, "http_client_request_body_size_bytes": true}

// dropEmpty returns a new slice: a gathered series' labels may be its collector's own.
func dropEmpty(ls []*dto.LabelPair) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(ls))
	for _, l := range ls {
		if l.GetValue() != "" {
			out = append(out, l)
		}
	}
	return out
}

// seriesScope is the scope a series names in its otel_scope_name label, if it does.
func seriesScope(m *dto.Metric) (Scope, bool) {
	for _, l := range m.GetLabel() {
		if l.GetName() == "otel_scope_name" {
			if sc, ok := scopes[l.GetValue()]; ok {
				return sc, true
			}
			return Scope{Name: l.GetValue()}, true
		}
	}
	return Scope{}, false
}

func sortLabels(l []*dto.LabelPair) {
	sort.Slice(l, func(i, j int) bool { return l[i].GetName() < l[j].GetName() })
}

// MetricsHandler serves reg's metrics as upstream's :9090 page does, with promhttp's own request
// counters (upstream serves the default registry, which has them).
func MetricsHandler(reg *prometheus.Registry, id Identity) http.Handler {
	return promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(NewGatherer(reg, id), promhttp.HandlerOpts{}))
}
