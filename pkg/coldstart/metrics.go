package coldstart

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Phase label values.
const (
	// Activator phases.
	PhasePoke      = "poke"       // arrival → poke sent
	PhasePodReady  = "pod_ready"  // poke sent → first pod's probe passed
	PhaseFirstByte = "first_byte" // pod ready → first byte written to the client
	// Autoscaler phases.
	PhaseDecide = "decide" // poke received → decision > 0
	PhaseScale  = "scale"  // decision → /scale patch returned
	PhasePaced  = "paced"  // part of scale: waiting for pod-start capacity
	// Both.
	PhaseTotal = "total"
)

// Buckets returns the histogram buckets: 1 ms (the Knative-attributable
// steps) to 60 s (a slow image pull), roughly ×2–2.5 apart.
func Buckets() []float64 {
	return []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60}
}

// newHistogram returns thaw_<component>_coldstart_phase_seconds{phase},
// registered with reg when non-nil.
func newHistogram(component string, reg prometheus.Registerer) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "thaw_" + component + "_coldstart_phase_seconds",
		Help:    "Duration of each phase of a cold start, as seen by the " + component + ".",
		Buckets: Buckets(),
	}, []string{"phase"})
	if reg != nil {
		reg.MustRegister(h)
	}
	return h
}

// observe records from→to in phase, if both ends are known and in order.
func observe(h *prometheus.HistogramVec, name string, from, to time.Time) {
	if d, ok := phase(from, to); ok {
		h.WithLabelValues(name).Observe(d.Seconds())
	}
}
