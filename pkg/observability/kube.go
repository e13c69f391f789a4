package observability

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	k8smetrics "k8s.io/client-go/tools/metrics"
	"k8s.io/client-go/util/workqueue"
)

// The Kubernetes client and workqueue metrics upstream exports (knative.dev/pkg
// observability/metrics/k8s, installed by serving's otel.SetupObservabilityOrDie), named as they come
// out of upstream's Prometheus exporter. client-go takes one provider per process, so they are
// installed once and the same collectors are registered with every registry NewRegistry makes.

// latencyBuckets are upstream's bounds for these histograms.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// maxURLTemplates bounds the url_template label: upstream records the request path there, which names
// objects; past this many distinct paths new ones are recorded as "_OTHER" so memory stays bounded.
const maxURLTemplates = 2048

type kubeMetrics struct {
	depth          *prometheus.GaugeVec
	adds           *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	workDuration   *prometheus.HistogramVec
	unfinishedWork *prometheus.GaugeVec
	longestRunning *prometheus.GaugeVec
	retries        *prometheus.CounterVec
	clientDuration *prometheus.HistogramVec
	clientResults  *prometheus.CounterVec

	mu    sync.Mutex
	paths map[string]struct{}
}

var (
	kubeOnce sync.Once
	kube     *kubeMetrics
)

// KubernetesMetrics installs the workqueue and client-go metrics providers (the first call does; a
// queue created earlier has none) and returns their collectors, to register with a registry.
func KubernetesMetrics() []prometheus.Collector {
	kubeOnce.Do(func() {
		kube = newKubeMetrics()
		workqueue.SetProvider(kube)
		k8smetrics.Register(k8smetrics.RegisterOpts{RequestLatency: kube, RequestResult: kubeResults{kube}})
	})
	return kube.collectors()
}

func newKubeMetrics() *kubeMetrics {
	name := []string{"name"}
	return &kubeMetrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kn_workqueue_depth",
			Help: "Number of current items in the queue"}, name),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kn_workqueue_adds_total",
			Help: "Number of items added to the queue"}, name),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kn_workqueue_queue_duration_seconds",
			Help: "How long an item stays in workqueue", Buckets: latencyBuckets}, name),
		// Upstream passes its description as a second unit, so the family has no help text.
		workDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kn_workqueue_process_duration_seconds",
			Buckets: latencyBuckets}, name),
		unfinishedWork: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kn_workqueue_unfinished_work_seconds"}, name),
		longestRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kn_workqueue_longest_running_processor_seconds"}, name),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kn_workqueue_retries_total",
			Help: "Number of items re-added to the queue"}, name),
		// One family for client-go's requests and for otelhttp's (the activator's to pods), as on
		// upstream's page: each series names its scope, and a label it does not have is empty (absent).
		clientDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_client_request_duration_seconds",
			Help: "Duration of HTTP client requests.", Buckets: latencyBuckets}, clientLabelNames),
		clientResults: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kn_k8s_client_http_response_status_code_total",
			Help: "Count of response codes partitioned by method and host"},
			[]string{"http_request_method", "http_response_status_code", "server_address"}),
		paths: map[string]struct{}{},
	}
}

func (k *kubeMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{k.depth, k.adds, k.latency, k.workDuration, k.unfinishedWork, k.longestRunning,
		k.retries, k.clientDuration, k.clientResults}
}

// workqueue.MetricsProvider: the series are labelled with the queue's name.

func (k *kubeMetrics) NewDepthMetric(n string) workqueue.GaugeMetric {
	return k.depth.WithLabelValues(n)
}
func (k *kubeMetrics) NewAddsMetric(n string) workqueue.CounterMetric {
	return k.adds.WithLabelValues(n)
}
func (k *kubeMetrics) NewLatencyMetric(n string) workqueue.HistogramMetric {
	return k.latency.WithLabelValues(n)
}
func (k *kubeMetrics) NewWorkDurationMetric(n string) workqueue.HistogramMetric {
	return k.workDuration.WithLabelValues(n)
}
func (k *kubeMetrics) NewUnfinishedWorkSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return k.unfinishedWork.WithLabelValues(n)
}
func (k *kubeMetrics) NewLongestRunningProcessorSecondsMetric(n string) workqueue.SettableGaugeMetric {
	return k.longestRunning.WithLabelValues(n)
}
func (k *kubeMetrics) NewRetriesMetric(n string) workqueue.CounterMetric {
	return k.retries.WithLabelValues(n)
}

// Observe is client-go's request latency: upstream labels it with the method, the server's host and
// port (the scheme's default unless the URL names one), the scheme and the path as url.template.
func (k *kubeMetrics) Observe(_ context.Context, verb string, u url.URL, latency time.Duration) {
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	if p := u.Port(); p != "" {
		if _, err := strconv.Atoi(p); err == nil {
			port = p
		}
	}
	var lv clientLabels
	lv[clMethod], lv[clServerAddress], lv[clServerPort], lv[clScheme], lv[clTemplate] = strings.ToUpper(verb), u.Hostname(), port, u.Scheme, k.template(u.Path)
	lv[clScope] = ScopeKube.Name
	k.clientDuration.WithLabelValues(lv[:]...).Observe(latency.Seconds())
}

func (k *kubeMetrics) template(path string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.paths[path]; ok {
		return path
	}
	if len(k.paths) >= maxURLTemplates {
		return "_OTHER"
	}
	k.paths[path] = struct{}{}
	return path
}

// kubeResults is client-go's result counter. Upstream means to label the status code; it does so
// for 200 only (its parse check is inverted), Thaw for every numeric code.
type kubeResults struct{ k *kubeMetrics }

func (r kubeResults) Increment(_ context.Context, code, method, host string) {
	if _, err := strconv.Atoi(code); err != nil {
		code = ""
	}
	r.k.clientResults.WithLabelValues(strings.ToUpper(method), code, host).Inc()
}
