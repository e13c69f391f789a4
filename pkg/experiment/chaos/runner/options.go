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
	Lab bool
	// APIServer marks faults that stop the lab's kube-apiserver process.
	APIServer bool
	// Once applies the fault a single time at the start of the duration (held for --hold).
	Once bool
	// Doomed creates the never-ready service and its load; its failures in the fault are expected.
	Doomed bool
	// UndoTimeout bounds the undo (0: the fault package's default).
	UndoTimeout time.Duration
	Help        string
}

// Scenarios are the faults `thaw chaos run` knows.
var Scenarios = []Scenario{
	{Name: "autoscaler-kill", SLO: 1.0, Help: "SIGKILL the autoscaler pod holding a random bucket every --period (3 replicas, 10 buckets, Leases 15s/10s/2s)"},
	{Name: "autoscaler-delete", SLO: 1.0, Help: "delete the autoscaler pod holding a random bucket gracefully every --period"},
	{Name: "activator-kill", SLO: 0.90, Help: "SIGKILL a random activator pod every --period"},
	{Name: "activator-kill-all", SLO: 0.90, Help: "SIGKILL every activator pod at once every --period"},
	{Name: "activator-delete", SLO: 1.0, Help: "delete a random activator pod gracefully every --period"},
	{Name: "activator-delete-all", SLO: 1.0, Help: "delete every activator pod gracefully at once every --period"},
	{Name: "autoscaler-cutoff", SLO: 1.0, Hold: true, Lab: true, Help: "drop every activator's traffic to the autoscaler's :8080 for --hold, every --period"},
	{Name: "network-loss", SLO: 1.0, Hold: true, Lab: true, Help: "drop --loss of the packets between every activator and the pods (:80, :8012) both ways for --hold, every --period"},
	{Name: "network-delay", SLO: 1.0, Hold: true, Lab: true, Help: "hold every packet from every activator to the pods (:80, :8012) --delay (NFQUEUE, no netem) for --hold, every --period"},
	{Name: "apiserver-outage", SLO: 1.0, Hold: true, APIServer: true, UndoTimeout: 2 * time.Minute, Help: "stop the lab's kube-apiserver (SIGKILL) for --hold, every --period"},
	{Name: "user-pod-kill", SLO: 0.90, Help: "SIGKILL the app container of a cold service's pod as it scales up, every --period"},
	{Name: "injected", SLO: 1.0, Hold: true, Help: "faults built into Thaw's components (--inject KEY=VALUE) for --hold, every --period; needs THAW_FAULT_INJECTION=enabled in their Deployments"},
	{Name: "never-ready", SLO: 1.0, Hold: true, Once: true, Doomed: true, Help: "a service whose new pods cannot start for --hold (its ConfigMap deleted, then put back); its failures are counted apart"},
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
	// Daemons stops and starts the lab's control plane (apiserver-outage); nil off the lab.
	Daemons fault.Daemons
	// Loss is the share of packets network-loss drops.
	Loss float64
	// Delay is what network-delay adds to each packet from the activators to the pods.
	Delay time.Duration
	// Inject is the injected scenario's thaw-fault-injection keys and values.
	Inject map[string]string
	// DoomedEvery is the interval of the never-ready service's load (default 10s).
	DoomedEvery time.Duration
	// Settle is the wait after the shape is in place, for the activators' stat websockets to reach
	// the autoscalers that took the buckets (default 10s).
	Settle   time.Duration
	Sides    []Side
	Swap     func(ctx context.Context, im swap.Images) error
	Restore  swap.Images
	Keep     bool
	Seed     uint64
	Progress io.Writer
	Clock    clock.WithTicker
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
		if s.APIServer && o.Daemons == nil {
			errs = append(errs, fmt.Errorf("%s needs the lab (it stops the kube-apiserver process)", s.Name))
		}
		if s.Name == "network-loss" && (o.Loss <= 0 || o.Loss >= 1) {
			errs = append(errs, fmt.Errorf("network-loss: loss %v, want a share between 0 and 1", o.Loss))
		}
		if s.Name == "network-delay" && (o.Delay <= 0 || o.Delay > fault.MaxDelay) {
			errs = append(errs, fmt.Errorf("network-delay: delay %v, want more than 0 and at most %v", o.Delay, fault.MaxDelay))
		}
		if s.Name == "injected" {
			if err := (fault.Injected{Faults: o.Inject}).Validate(); err != nil {
				errs = append(errs, fmt.Errorf("injected: %w", err))
			}
		}
		if s.Hold && o.Hold <= 0 {
			errs = append(errs, fmt.Errorf("%s needs a positive hold", s.Name))
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
	if o.DoomedEvery <= 0 {
		o.DoomedEvery = 10 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = settle
	}
	return errors.Join(errs...)
}
