package observability

import (
	"context"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The labels of http_client_request_duration_seconds, shared by client-go's series and otelhttp's: the
// union of both label sets; a series leaves the others empty, which Prometheus does not show.
const (
	clErrorType = iota
	clMethod
	clStatus
	clNamespace
	clConfiguration
	clRevision
	clService
	clProtoName
	clProtoVersion
	clOverflow
	clScope
	clServerAddress
	clServerPort
	clScheme
	clTemplate
	clLabels
)

type clientLabels [clLabels]string

var clientLabelNames = []string{"error_type", "http_request_method", "http_response_status_code", "k8s_namespace_name",
	"kn_configuration_name", "kn_revision_name", "kn_service_name", "network_protocol_name", "network_protocol_version",
	"otel_metric_overflow", "otel_scope_name", "server_address", "server_port", "url_scheme", "url_template"}

// clientCardinalityLimit is the OTel SDK's default limit of series per instrument: past it, upstream's
// measurements go to one overflow series (otel.metric.overflow=true). The pod address is a label, so
// without it pod churn would grow the series for good.
const clientCardinalityLimit = 2000

// RevisionLabels are the attributes upstream's activator puts on its requests to a revision's pods
// (through otelhttp's labeler): they label the client metrics of that request.
type RevisionLabels struct{ Service, Configuration, Revision, Namespace string }

type revisionLabelsKey struct{}

// WithRevisionLabels returns ctx carrying l for the client metrics of a request made with it.
func WithRevisionLabels(ctx context.Context, l RevisionLabels) context.Context {
	return context.WithValue(ctx, revisionLabelsKey{}, l)
}

// HTTPClientMetrics records, for requests sent through Wrap, what otelhttp's transport records in
// upstream's activator: http.client.request.duration and http.client.request.body.size, with the
// request's method, status, protocol, scheme, server address and port and the revision's labels.
type HTTPClientMetrics struct {
	duration *prometheus.HistogramVec
	bodySize *prometheus.HistogramVec

	mu     sync.Mutex
	series map[clientLabels]struct{}
}

// NewHTTPClientMetrics registers the body size histogram with reg; the duration is the family
// KubernetesMetrics returns, which NewRegistry registers.
func NewHTTPClientMetrics(reg prometheus.Registerer) *HTTPClientMetrics {
	KubernetesMetrics()
	c := &HTTPClientMetrics{
		duration: kube.clientDuration,
		bodySize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_client_request_body_size_bytes",
			Help: "Size of HTTP client request bodies.", Buckets: sizeBuckets}, clientLabelNames),
		series: map[clientLabels]struct{}{},
	}
	if reg != nil {
		reg.MustRegister(c.bodySize)
	}
	return c
}

// sizeBuckets are the OTel SDK's default bounds, which otelhttp's body size histograms keep.
var sizeBuckets = []float64{0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000}

// Wrap returns rt recording the metrics of each request.
func (c *HTTPClientMetrics) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		start := time.Now()
		resp, err := rt.RoundTrip(r)
		lv := c.labels(r, resp, err)
		c.duration.WithLabelValues(lv[:]...).Observe(time.Since(start).Seconds())
		// The declared length: otelhttp counts what the transport read, the same but for chunked bodies.
		c.bodySize.WithLabelValues(lv[:]...).Observe(float64(max(r.ContentLength, 0)))
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *HTTPClientMetrics) labels(r *http.Request, resp *http.Response, err error) clientLabels {
	var lv clientLabels
	lv[clScope] = ScopeOtelHTTP.Name
	lv[clMethod] = standardMethod(r.Method)
	host, port := r.URL.Host, ""
	if h, p, e := net.SplitHostPort(host); e == nil {
		host, port = h, p
	}
	scheme := r.URL.Scheme
	if scheme == "" {
		scheme = "http"
	}
	if port == "80" && scheme == "http" || port == "443" && scheme == "https" {
		port = "" // otelhttp names the port only when it is not the scheme's
	}
	lv[clServerAddress], lv[clServerPort], lv[clScheme] = host, port, scheme
	if name, version, ok := strings.Cut(r.Proto, "/"); ok {
		lv[clProtoName], lv[clProtoVersion] = strings.ToLower(name), version
	}
	if err == nil {
		lv[clStatus] = strconv.Itoa(resp.StatusCode)
	} else {
		lv[clErrorType] = errorType(err)
	}
	if l, ok := r.Context().Value(revisionLabelsKey{}).(RevisionLabels); ok {
		lv[clService], lv[clConfiguration], lv[clRevision], lv[clNamespace] = l.Service, l.Configuration, l.Revision, l.Namespace
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.series[lv]; ok {
		return lv
	}
	if len(c.series) >= clientCardinalityLimit-1 { // the overflow series counts towards the limit
		return clientLabels{clScope: ScopeOtelHTTP.Name, clOverflow: "true"}
	}
	c.series[lv] = struct{}{}
	return lv
}

// DeleteRevision drops the series of a deleted revision.
func (c *HTTPClientMetrics) DeleteRevision(namespace, name string) {
	match := prometheus.Labels{"k8s_namespace_name": namespace, "kn_revision_name": name}
	c.duration.DeletePartialMatch(match)
	c.bodySize.DeletePartialMatch(match)
	c.mu.Lock()
	defer c.mu.Unlock()
	for lv := range c.series {
		if lv[clNamespace] == namespace && lv[clRevision] == name {
			delete(c.series, lv)
		}
	}
}

// standardMethod keeps the method's cardinality bounded as otelhttp does.
func standardMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// errorType is otelhttp's error.type: the error's type, package-qualified.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.PkgPath() == "" || t.Name() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}
