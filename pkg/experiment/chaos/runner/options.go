// Package runner runs chaos scenarios on a cluster: it creates a steady service (never at zero) and
// cold services (scaling to zero, poked in turn), keeps a load on both through the ingress, applies
// one scenario's fault on a schedule between a quiet phase before and a recovery phase after, and
// records every request, each PodAutoscaler's scale every second and the autoscaler's bucket Leases.
// With several sides (upstream's components, then Thaw's) it swaps between them and puts back what it
// found, as the cold-start experiment does, and the cluster's shape (replicas, buckets, Lease timings).
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/runner"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
	"github.com/thaw-dev/thaw/test/upstream"
)

// Scenario is one fault and the SLO its exposed requests are held to.
type Scenario struct {
	Name string
	// SLO is the success ratio of the requests sent during and after the faults. The anchors are
	// upstream's test/ha (activator graceful 1.0, SIGKILL 0.90) and the targets for Thaw.
	SLO float64
	// Hold is how long the fault stays (0 for kills and deletes).
	Hold bool
	// Lab marks faults that need node access (the lab's containerd and network namespaces).
	Lab  bool
	Help string
}

// Scenarios are the faults `thaw chaos run` knows.
var Scenarios = []Scenario{
	{Name: "autoscaler-kill", SLO: 1.0, Help: "SIGKILL the autoscaler pod holding a random bucket every --period (3 replicas, 10 buckets, Leases 15s/10s/2s)"},
	{Name: "activator-kill", SLO: 0.90, Help: "SIGKILL a random activator pod every --period"},
	{Name: "activator-delete", SLO: 1.0, Help: "delete a random activator pod gracefully every --period"},
	{Name: "autoscaler-cutoff", SLO: 1.0, Hold: true, Lab: true, Help: "drop every activator's traffic to the autoscaler's :8080 for --hold, every --period"},
}

// ScenarioByName finds a scenario.
func ScenarioByName(name string) (Scenario, bool) {
	i := slices.IndexFunc(Scenarios, func(s Scenario) bool { return s.Name == name })
	if i < 0 {
		return Scenario{}, false
	}
	return Scenarios[i], true
}

// Side is one set of components; nil Images runs what is there.
type Side = runner.Side

// Options configure Run.
type Options struct {
	Client    *kube.Client
	Namespace string
	// Image is the app (test/apps/autoscale: ?sleep=ms holds each request).
	Image   string
	Ingress string
	// Routable, when set, is waited for before the first request of a ksvc (the lab's kube-proxy check).
	Routable  ksvc.ProgrammedFunc
	Scenarios []Scenario
	// Duration of the faults, Period between them (±Jitter), Hold of a fault that stays.
	Duration, Period, Jitter, Hold time.Duration
	// Before and After are the quiet phases around the faults.
	Before, After time.Duration
	// Rate is the steady load (requests/s), each held Sleep by the app.
	Rate  float64
	Sleep time.Duration
	// ColdServices are poked in turn, one every ColdEvery.
	ColdServices int
	ColdEvery    time.Duration
	// Timeout bounds one request.
	Timeout time.Duration
	// Shape is the autoscaler's and activator's replicas and the buckets during the run.
	Shape upstream.Shape
	// Containerd kills containers on the lab's node; nil deletes pods with no grace instead.
	Containerd *fault.Containerd
	Sides      []Side
	Swap       func(ctx context.Context, im swap.Images) error
	Restore    swap.Images
	Keep       bool
	Seed       uint64
	Progress   io.Writer
	Clock      clock.WithTicker
}

func (o *Options) validate() error {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("no cluster client"))
	}
	if o.Namespace == "" || o.Image == "" || o.Ingress == "" {
		errs = append(errs, errors.New("namespace, image and ingress are required"))
	}
	if len(o.Scenarios) == 0 {
		errs = append(errs, errors.New("no scenario"))
	}
	for _, s := range o.Scenarios {
		if s.Lab && o.Containerd == nil {
			errs = append(errs, fmt.Errorf("%s needs the lab's node (iptables in the activators' network namespaces); "+
				"on another cluster it needs fault injection inside the components", s.Name))
		}
	}
	if o.Duration <= 0 || o.Period <= 0 || o.Rate <= 0 || o.ColdServices <= 0 || o.ColdEvery <= 0 || o.Timeout <= 0 {
		errs = append(errs, errors.New("duration, period, rate, cold services, cold interval and timeout must be positive"))
	}
	if len(o.Sides) == 0 {
		errs = append(errs, errors.New("no side"))
	}
	for _, s := range o.Sides {
		if s.Images != nil && o.Swap == nil {
			errs = append(errs, fmt.Errorf("side %s has images but there is no way to swap", s.Name))
		}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return errors.Join(errs...)
}
