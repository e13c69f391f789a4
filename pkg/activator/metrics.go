package activator

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

// Metrics are the activator's request instruments, named as upstream's OTel
// instruments appear through a Prometheus exporter.
type Metrics struct {
	queued   *prometheus.GaugeVec
	active   *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	// reqSize and respSize are otelhttp's body size histograms, labelled as duration.
	reqSize, respSize *prometheus.HistogramVec
}

// serverLabelNames are the labels of the server duration and body size histograms.
var serverLabelNames = []string{"http_request_method", "http_response_status_code", "network_protocol_name", "network_protocol_version",
	"url_scheme", "server_address", "server_port",
	"kn_service_name", "kn_configuration_name", "kn_revision_name", "k8s_namespace_name"}

// sizeBuckets are the OTel SDK's default bounds, which otelhttp's body size histograms keep.
var sizeBuckets = []float64{0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000}

// NewMetrics registers the request metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	revLabels := []string{"k8s_namespace_name", "kn_revision_name"}
	m := &Metrics{
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kn_revision_request_queued",
			Help: "Number of requests currently queued in the activator waiting for capacity",
		}, revLabels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kn_revision_request_active",
			Help: "Number of requests currently being proxied by the activator",
		}, revLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_server_request_duration_seconds",
			Help: "Duration of HTTP server requests.",
			// OTel's semantic-convention buckets for this instrument.
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10},
		}, serverLabelNames),
		reqSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_server_request_body_size_bytes", Help: "Size of HTTP server request bodies.", Buckets: sizeBuckets,
		}, serverLabelNames),
		respSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_server_response_body_size_bytes", Help: "Size of HTTP server response bodies.", Buckets: sizeBuckets,
		}, serverLabelNames),
	}
	if reg != nil {
		reg.MustRegister(m.queued, m.active, m.duration, m.reqSize, m.respSize)
	}
	return m
}

// DeleteRevision drops the series of a deleted revision, bounding memory.
func (m *Metrics) DeleteRevision(rev types.NamespacedName) {
	m.queued.DeleteLabelValues(rev.Namespace, rev.Name)
	m.active.DeleteLabelValues(rev.Namespace, rev.Name)
	for _, h := range []*prometheus.HistogramVec{m.duration, m.reqSize, m.respSize} {
		h.DeletePartialMatch(prometheus.Labels{"kn_revision_name": rev.Name, "k8s_namespace_name": rev.Namespace})
	}
}

// methodLabel keeps the method label's cardinality bounded, as OTel does.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// serverLabels are otelhttp's url.scheme, server.address and server.port of a request: the Host's
// name, and its port only when it is not the scheme's default (an empty label is no label).
func serverLabels(r *http.Request) (scheme, host, port string) {
	scheme, def := "http", "80"
	if r.TLS != nil {
		scheme, def = "https", "443"
	}
	// The Host is the client's: a label value must be UTF-8, or client_golang panics.
	h := strings.ToValidUTF8(r.Host, "\uFFFD")
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		return scheme, h, ""
	}
	if port == def {
		port = ""
	}
	return scheme, host, port
}

func protoVersion(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "2"
	}
	return strconv.Itoa(r.ProtoMajor) + "." + strconv.Itoa(r.ProtoMinor)
}
