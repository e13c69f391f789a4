// Package decider is the KPA scaling math: from the observed stable and panic
// values of a revision and its ready pod count, it decides the desired scale,
// the excess burst capacity and whether the revision is in panic mode.
//
// It is pure: no clock (time comes in through now), no Kubernetes, no locks,
// and no allocation per decision. A Decider is not safe for concurrent use;
// its owner (the multiscaler runner) serialises calls.
//
// The decisions match Knative Serving's KPA (pkg/autoscaler/scaling) exactly,
// including the order of floating-point operations.
package decider

import (
	"math"
	"time"

	"github.com/thaw-dev/thaw/pkg/autoscaler/window"
)

// Scaling metrics, as in the autoscaling.knative.dev/metric annotation.
const (
	MetricConcurrency = "concurrency"
	MetricRPS         = "rps"
)

// Spec holds the parameters a revision is scaled by. The fields mirror
// upstream's DeciderSpec.
type Spec struct {
	MaxScaleUpRate   float64
	MaxScaleDownRate float64
	// ScalingMetric is MetricConcurrency (also the default for any other
	// value) or MetricRPS.
	ScalingMetric string
	// TargetValue is the per-pod value of the metric to maintain
	// (TargetValue <= TotalValue).
	TargetValue float64
	// TotalValue is the per-pod value a pod can take at most.
	TotalValue float64
	// TargetBurstCapacity: 0 no burst capacity, −1 unlimited (activator
	// always in path), >0 the capacity to keep spare.
	TargetBurstCapacity float64
	// ActivatorCapacity is one activator's capacity, used for subsetting.
	ActivatorCapacity float64
	// PanicThreshold is the ratio of desired panic pods to ready pods at
	// which panic mode begins.
	PanicThreshold float64
	// StableWindow is how long panic mode lasts after the last time over
	// the threshold.
	StableWindow time.Duration
	// ScaleDownDelay is how long a scale-down is held back.
	ScaleDownDelay time.Duration
	InitialScale   int32
	// Reachable is false when no route references the revision; then it may
	// scale down without the scale-down rate or delay.
	Reachable bool
	// ActivationScale is the minimum non-zero scale (when > 1).
	ActivationScale int32
}

// Observation is what a decision is made from.
type Observation struct {
	// Stable and Panic are the revision-wide metric values over the stable
	// and panic windows.
	Stable, Panic float64
	// Ready is the number of ready pods.
	Ready int
	// NoData marks that the collector has no data yet; the decision is then
	// invalid and the decider's state does not change.
	NoData bool
}

// Decision is the result of one Scale.
type Decision struct {
	DesiredScale        int32
	ExcessBurstCapacity int32
	InPanic             bool
	// Valid is false when there was no data to decide on.
	Valid bool
}

// Decider is the per-revision scaling state.
type Decider struct {
	spec Spec

	// panicTime is the last time the panic threshold was crossed (unix
	// nanoseconds); meaningful only while inPanic.
	panicTime int64
	inPanic   bool
	// maxPanicPods is the highest desired scale seen in this panic; while in
	// panic the decider never goes below it.
	maxPanicPods int32

	// delay holds back scale-downs; nil without a scale-down delay. Like
	// upstream, it is sized once at creation: a changed ScaleDownDelay takes
	// effect when the decider is recreated.
	delay *window.Max
}

// New returns a decider for spec created at now with ready pods. With more
// than one ready pod it starts in panic mode with maxPanicPods = ready, so that
// an autoscaler restart, which loses the metric history, does not scale the
// revision down before enough data is in.
func New(spec Spec, ready int, now time.Time) *Decider {
	d := &Decider{spec: spec, maxPanicPods: int32(ready)}
	if ready > 1 {
		d.panicTime, d.inPanic = now.UnixNano(), true
	}
	if spec.ScaleDownDelay > 0 {
		d.delay = window.NewMax(spec.ScaleDownDelay)
	}
	return d
}

// Update replaces the spec; the panic state is kept.
func (d *Decider) Update(spec Spec) { d.spec = spec }

// Spec returns the current spec.
func (d *Decider) Spec() Spec { return d.spec }

// SpecRef returns the current spec without copying it; the caller must not
// keep it past its hold on the decider.
func (d *Decider) SpecRef() *Spec { return &d.spec }

// InPanic reports whether the decider is in panic mode.
func (d *Decider) InPanic() bool { return d.inPanic }

// Scale decides at now from obs.
func (d *Decider) Scale(now time.Time, obs Observation) Decision {
	if obs.NoData {
		return Decision{}
	}
	s := &d.spec
	// At least one pod, so that scaling up from zero is possible.
	readyF := max(1, float64(obs.Ready))

	// Ceil so that a conservative rate still allows growing by one pod.
	maxUp := math.Ceil(s.MaxScaleUpRate * readyF)
	maxDown := 0.
	if s.Reachable {
		maxDown = math.Floor(readyF / s.MaxScaleDownRate)
	}

	dspc := math.Ceil(obs.Stable / s.TargetValue)
	dppc := math.Ceil(obs.Panic / s.TargetValue)
	// The builtin min and max treat NaN, ±0 and ±Inf as math.Min and
	// math.Max do, but compile inline.
	stable := int32(min(max(dspc, maxDown), maxUp))
	panicPods := int32(min(max(dppc, maxDown), maxUp))

	if s.ActivationScale > 1 {
		if dspc > 0 && s.ActivationScale > stable {
			stable = s.ActivationScale
		}
		if dppc > 0 && s.ActivationScale > panicPods {
			panicPods = s.ActivationScale
		}
	}

	nowNs := now.UnixNano()
	over := dppc/readyF >= s.PanicThreshold
	switch {
	case over:
		// Enter panic, or extend it while still over the threshold.
		d.panicTime, d.inPanic = nowNs, true
	case d.inPanic && d.panicTime+int64(s.StableWindow) < nowNs:
		// The surge has made its way into the stable window.
		d.panicTime, d.inPanic = 0, false
		d.maxPanicPods = 0
	}

	desired := stable
	if d.inPanic {
		// The stable value may exceed the panic one; provision for both.
		desired = max(desired, panicPods)
		// No scale-down while in panic.
		d.maxPanicPods = max(d.maxPanicPods, desired)
		desired = d.maxPanicPods
	}

	if s.Reachable && d.delay != nil {
		d.delay.Record(now, desired)
		desired = d.delay.Current()
	}

	// Burst capacity is computed from the panic value so that the activator
	// is put in the path promptly; it uses the raw ready count.
	ebc := -1.
	switch {
	case s.TargetBurstCapacity == 0:
		ebc = 0
	case s.TargetBurstCapacity > 0:
		ebc = math.Floor(float64(obs.Ready)*s.TotalValue - s.TargetBurstCapacity - obs.Panic)
	}

	return Decision{
		DesiredScale:        desired,
		ExcessBurstCapacity: int32(ebc),
		InPanic:             d.inPanic,
		Valid:               true,
	}
}
