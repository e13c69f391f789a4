package replay

import (
	"fmt"
	"time"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

// Annotations and config keys a policy maps to on a cluster.
const (
	// WindowAnnotation is the revision's stable window.
	WindowAnnotation = "autoscaling.knative.dev/window"
	// RetentionAnnotation is the revision's scale-to-zero-pod-retention-period.
	RetentionAnnotation = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
	// GraceKey is config-autoscaler's scale-to-zero-grace-period (cluster-wide only).
	GraceKey = "scale-to-zero-grace-period"
	// KeepAliveAnnotation asks Thaw's autoscaler for its learned keep-alive
	// policy on one revision (values learned or hybrid, the simulation's
	// names); upstream's webhook prunes it from the PodAutoscaler, so an
	// upstream autoscaler runs such a revision with its default policy.
	KeepAliveAnnotation = asconfig.KeepAliveAnnotationKey
)

// minWindow is the least stable window and grace period upstream's
// validation accepts.
const minWindow = 6 * time.Second

// LabPolicy is a simulation policy as a cluster runs it, with time
// compressed by the replay's speed: the stable window, grace and retention
// are the trace's divided by the speed, rounded to a second and no less than
// upstream's minimum of 6 s for the window and the grace.
type LabPolicy struct {
	Name string
	// Trace is the policy in trace time (`thaw replay --simulate`'s).
	Trace sim.Policy
	// Window, Grace and Retention are on the wall clock; Grace is
	// cluster-wide, so every policy of a run has the same.
	Window, Grace, Retention time.Duration
	// KeepAlive is the KeepAliveAnnotation's value ("" for none).
	KeepAlive string
	// Clamped says which windows could not be compressed fully.
	Clamped []string
}

// Thaw tells whether only Thaw's autoscaler runs the policy.
func (p LabPolicy) Thaw() bool { return p.KeepAlive != "" }

// Wall is the policy the cluster runs, for the simulation of its run.
func (p LabPolicy) Wall() sim.Policy {
	return sim.Policy{Name: p.Name, Grace: p.Grace, Retention: p.Retention, Learned: p.Trace.Learned}
}

// Config is the autoscaler config of the cluster's run (for the
// simulation of it): the defaults with the policy's stable window.
func (p LabPolicy) Config() *asconfig.Config {
	c := asconfig.DefaultConfig()
	c.StableWindow = p.Window
	c.ScaleToZeroGracePeriod = p.Grace
	return c
}

// Annotations are the ksvc template's annotations for the policy.
func (p LabPolicy) Annotations() map[string]string {
	a := map[string]string{WindowAnnotation: p.Window.String()}
	if p.Retention > 0 {
		a[RetentionAnnotation] = p.Retention.String()
	}
	if p.KeepAlive != "" {
		a[KeepAliveAnnotation] = p.KeepAlive
	}
	return a
}

// String describes the cluster's settings of the policy.
func (p LabPolicy) String() string {
	s := fmt.Sprintf("%s: window %v, grace %v", p.Name, p.Window, p.Grace)
	if p.Retention > 0 {
		s += fmt.Sprintf(", retention %v", p.Retention)
	}
	if p.KeepAlive != "" {
		s += ", " + KeepAliveAnnotation + "=" + p.KeepAlive
	}
	for _, c := range p.Clamped {
		s += " (" + c + ")"
	}
	return s
}

// compress divides a trace-time window by speed, to whole seconds, no less
// than least; note says so when least won.
func compress(name string, d time.Duration, speed float64, least time.Duration) (time.Duration, string) {
	w := wall(d, speed).Round(time.Second)
	if d > 0 && w < time.Second {
		w = time.Second
	}
	if w < least {
		return least, fmt.Sprintf("%s %v/%g = %v raised to %v", name, d, speed, wall(d, speed), least)
	}
	return w, ""
}

// LabPolicies maps simulation policies to the cluster at speed. The
// learned policies map to Thaw's annotation; their histogram's bins and
// costs are in wall-clock time on the cluster, so they learn the compressed
// idle times as they come.
func LabPolicies(pols []sim.Policy, speed float64) ([]LabPolicy, error) {
	if !(speed > 0) {
		return nil, fmt.Errorf("speed %v: want > 0", speed)
	}
	def := asconfig.DefaultConfig()
	out := make([]LabPolicy, 0, len(pols))
	for _, p := range pols {
		lp := LabPolicy{Name: p.Name, Trace: p}
		var note string
		lp.Window, note = compress("stable window", def.StableWindow, speed, minWindow)
		if note != "" {
			lp.Clamped = append(lp.Clamped, note)
		}
		lp.Grace, note = compress("grace", p.Grace, speed, minWindow)
		if note != "" {
			lp.Clamped = append(lp.Clamped, note)
		}
		if p.Retention > 0 {
			lp.Retention, _ = compress("retention", p.Retention, speed, 0)
		}
		if p.Learned != nil {
			switch m := asconfig.KeepAliveMode(p.Name); m {
			case asconfig.KeepAliveLearned, asconfig.KeepAliveHybrid:
				lp.KeepAlive = string(m)
			default:
				return nil, fmt.Errorf("policy %s: only learned and hybrid map to Thaw's autoscaler", p.Name)
			}
		}
		out = append(out, lp)
	}
	for _, lp := range out[1:] {
		if lp.Grace != out[0].Grace {
			return nil, fmt.Errorf("policies %s and %s want different grace periods (%v, %v): it is cluster-wide", out[0].Name, lp.Name, out[0].Grace, lp.Grace)
		}
	}
	return out, nil
}
