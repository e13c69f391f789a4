package multiscaler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
)

// Names and labels are upstream's OpenTelemetry instruments as the OTel
// Prometheus exporter renders them: a "{request}/s" unit adds "_per_second".
var revisionLabels = []string{"k8s_namespace_name", "kn_revision_name", "kn_service_name", "kn_configuration_name"}

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, revisionLabels, nil)
}

var (
	descDesired                      = desc("kn_revision_pods_desired", "Number of pods the autoscaler wants to allocate")
	descExcess                       = desc("kn_revision_capacity_excess", "Excess burst capacity observed over the stable window")
	descPanic                        = desc("kn_revision_panic_mode", "If greater than 0 the autoscaler is in panic mode")
	descCStable                      = desc("kn_revision_concurrency_stable", "Average of request count per observed pod over the stable window")
	descCPanic                       = desc("kn_revision_concurrency_panic", "Average of request count per observed pod over the panic window")
	descCTarget                      = desc("kn_revision_concurrency_target", "The desired concurrent requests for each pod")
	descRStable                      = desc("kn_revision_rps_stable_per_second", "Average of requests-per-second per observed pod over the stable window")
	descRPanic                       = desc("kn_revision_rps_panic_per_second", "Average of requests-per-second per observed pod over the panic window")
	descRTarget                      = desc("kn_revision_rps_target_per_second", "The desired concurrent requests for each pod")
	allDescs                         = []*prometheus.Desc{descDesired, descExcess, descPanic, descCStable, descCPanic, descCTarget, descRStable, descRPanic, descRTarget}
	_           prometheus.Collector = (*MultiScaler)(nil)
)

// Describe implements prometheus.Collector.
func (m *MultiScaler) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the gauges are read from the
// deciders at scrape time, so deciding costs nothing extra for metrics.
func (m *MultiScaler) Collect(ch chan<- prometheus.Metric) {
	m.mu.RLock()
	runners := make([]*runner, 0, len(m.runners))
	for _, r := range m.runners {
		runners = append(runners, r)
	}
	m.mu.RUnlock()
	for _, r := range runners {
		lv := []string{r.key.Namespace, r.key.Name, r.labels.Service, r.labels.Configuration}
		r.mu.Lock()
		st, stable, pnc, target, decided := r.status, r.stable, r.panic, r.target, r.decided
		rps := r.dec.Spec().ScalingMetric == decider.MetricRPS
		r.mu.Unlock()
		inPanic := 0.
		if st.InPanic {
			inPanic = 1
		}
		ch <- prometheus.MustNewConstMetric(descPanic, prometheus.GaugeValue, inPanic, lv...)
		if !decided {
			// Like upstream, values read 0 until the first valid decision.
			st.DesiredScale, st.ExcessBurstCapacity = 0, 0
		}
		ch <- prometheus.MustNewConstMetric(descDesired, prometheus.GaugeValue, float64(st.DesiredScale), lv...)
		ch <- prometheus.MustNewConstMetric(descExcess, prometheus.GaugeValue, float64(st.ExcessBurstCapacity), lv...)
		ds, dp, dt := descCStable, descCPanic, descCTarget
		if rps {
			ds, dp, dt = descRStable, descRPanic, descRTarget
		}
		ch <- prometheus.MustNewConstMetric(ds, prometheus.GaugeValue, stable, lv...)
		ch <- prometheus.MustNewConstMetric(dp, prometheus.GaugeValue, pnc, lv...)
		ch <- prometheus.MustNewConstMetric(dt, prometheus.GaugeValue, target, lv...)
	}
}
