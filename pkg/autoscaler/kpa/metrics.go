package kpa

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
)

// Pod count gauges, named as upstream's OTel instruments
// (kn.revision.pods.*) come out of the Prometheus exporter.
var (
	podLabels       = []string{"k8s_namespace_name", "kn_revision_name", "kn_service_name", "kn_configuration_name"}
	descRequested   = prometheus.NewDesc("kn_revision_pods_requested", "Number of pods autoscaler requested from Kubernetes", podLabels, nil)
	descCount       = prometheus.NewDesc("kn_revision_pods_count", "Number of pods that are allocated currently", podLabels, nil)
	descNotReady    = prometheus.NewDesc("kn_revision_pods_not_ready_count", "Number of pods that are not ready currently", podLabels, nil)
	descPending     = prometheus.NewDesc("kn_revision_pods_pending_count", "Number of pods that are pending currently", podLabels, nil)
	descTerminating = prometheus.NewDesc("kn_revision_pods_terminating_count", "Number of pods that are terminating currently", podLabels, nil)
)

type podGauge struct {
	service, configuration string
	pc                     podCounts
}

// podMetrics holds the last pod counts of every PA.
type podMetrics struct {
	mu sync.Mutex
	m  map[types.NamespacedName]podGauge
}

func (p *podMetrics) set(key types.NamespacedName, g podGauge) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[types.NamespacedName]podGauge{}
	}
	p.m[key] = g
}

func (p *podMetrics) delete(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, key)
}

// Describe implements prometheus.Collector.
func (r *Reconciler) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequested, descCount, descNotReady, descPending, descTerminating} {
		ch <- d
	}
	r.pacing.Describe(ch)
	r.keepAlive.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Reconciler) Collect(ch chan<- prometheus.Metric) {
	r.pacing.Collect(ch)
	r.keepAlive.Collect(ch)
	r.podMetrics.mu.Lock()
	defer r.podMetrics.mu.Unlock()
	for k, g := range r.podMetrics.m {
		lv := []string{k.Namespace, k.Name, g.service, g.configuration}
		for _, m := range []struct {
			d *prometheus.Desc
			v int
		}{{descRequested, g.pc.want}, {descCount, g.pc.ready}, {descNotReady, g.pc.notReady},
			{descPending, g.pc.pending}, {descTerminating, g.pc.terminating}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, float64(m.v), lv...)
		}
	}
}
