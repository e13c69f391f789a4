// Package runner runs the cold-start experiment on a cluster: it creates the services, waits for them to
// reach zero, fires first requests at each parallelism level, and collects one report.Sample per cold
// start from the measure package's sources. With several sides (upstream's components, then Thaw's) it
// swaps between them and puts back what it found.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// Side is one set of components to measure; nil Images measures what runs without swapping.
type Side struct {
	Name   string
	Images swap.Images
}

// Options configure Run.
type Options struct {
	Client    *kube.Client
	Namespace string
	Image     string
	// Services is how many ksvcs to create (at least the largest level).
	Services int
	// Levels are the numbers of services fired at once; Repeat the rounds per level.
	Levels []int
	Repeat int
	// Ingress is host:port of the ingress; the request's Host is the ksvc's URL host.
	Ingress string
	// RequestTimeout bounds one cold request; ZeroTimeout one wait for services to reach zero.
	RequestTimeout, ZeroTimeout time.Duration
	// FastZero sets config-autoscaler's scale-to-zero-grace-period to its minimum for the run.
	FastZero bool
	// Warmup cold-starts every service once, unmeasured, after a swap (see warmup).
	Warmup bool
	// Keep leaves the namespace and its services in place.
	Keep bool
	// CPURequest is the CPU request of both containers of each pod (small, so the largest level fits).
	CPURequest string
	// AuditLog is the apiserver's JSON audit log ("" or unreadable: the Deployment watch is used).
	AuditLog string
	// Routable, when set, is waited for before the first request of a ksvc (the lab's kube-proxy check).
	Routable ksvc.ProgrammedFunc
	// Sides are measured in order. Swap switches components; Restore is put back at the end.
	Sides   []Side
	Swap    func(ctx context.Context, im swap.Images) error
	Restore swap.Images
	// Progress gets one line per step and round.
	Progress io.Writer
	Clock    clock.Clock
}

// ParseLevels reads a comma-separated list of positive, distinct parallelism levels.
func ParseLevels(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--parallel %q: %q is not a positive integer", s, f)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("--parallel %q: %d is listed twice", s, n)
		}
		out = append(out, n)
	}
	return out, nil
}

// DefaultServices is enough services for the largest level, and for up to 100 cold starts of one level
// back to back without waiting for zero in between (the serial mode: --parallel 1 --repeat 50).
func DefaultServices(levels []int, repeat int) int {
	most, rounds := 0, 0
	for _, l := range levels {
		most = max(most, l)
		rounds = max(rounds, l*repeat)
	}
	return max(most, min(100, rounds))
}

func (o *Options) validate() error {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("no cluster client"))
	}
	if len(o.Levels) == 0 {
		errs = append(errs, errors.New("no parallelism level"))
	}
	if o.Repeat <= 0 {
		errs = append(errs, fmt.Errorf("--repeat %d: want at least 1", o.Repeat))
	}
	for _, l := range o.Levels {
		if l > o.Services {
			errs = append(errs, fmt.Errorf("--parallel %d needs at least %d services (--services %d)", l, l, o.Services))
		}
	}
	if o.Namespace == "" || o.Image == "" || o.Ingress == "" {
		errs = append(errs, errors.New("namespace, image and ingress are required"))
	}
	if len(o.Sides) == 0 {
		errs = append(errs, errors.New("no side to measure"))
	}
	for _, s := range o.Sides {
		if s.Images != nil && o.Swap == nil {
			errs = append(errs, fmt.Errorf("side %s has images but there is no way to swap", s.Name))
		}
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Minute
	}
	if o.ZeroTimeout <= 0 {
		o.ZeroTimeout = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.CPURequest == "" {
		o.CPURequest = "1m"
	}
	return errors.Join(errs...)
}
