package runner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/measure"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/report"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// cleanupTimeout bounds each restore step at the end, which runs even after Ctrl-C.
const cleanupTimeout = 3 * time.Minute

// settle is a pause after a swap: the new autoscaler leads, but the new activators' stat websockets
// connect to it a moment later, and a poke sent before that would be lost to the first cold start.
const settle = 5 * time.Second

type run struct {
	o     Options
	http  *http.Client
	watch *measure.Watcher
	audit *measure.AuditLog
}

func (r *run) progress(format string, args ...any) {
	fmt.Fprintf(r.o.Progress, "coldstart: "+format+"\n", args...)
}

func since(c clock.PassiveClock, t time.Time) time.Duration {
	return c.Since(t).Round(10 * time.Millisecond)
}

// Run performs the experiment and returns every sample. Whatever happens (errors, ctx cancelled), it
// restores config-autoscaler and the components it found, and deletes its namespace unless Keep.
func Run(ctx context.Context, o Options) (samples []report.Sample, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	r := &run{o: o, http: newHTTPClient(o.RequestTimeout)}
	cleanup := func(name string, f func(context.Context) error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if cerr := f(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: %w", name, cerr))
		} else {
			r.progress("%s done", name)
		}
	}
	if o.Restore != nil {
		defer cleanup("restoring activator="+o.Restore["activator"]+" autoscaler="+o.Restore["autoscaler"], func(ctx context.Context) error {
			return swap.Restore(ctx, o.Client.Kube, o.Restore, o.Swap)
		})
	}
	if o.FastZero {
		restore, err := setConfigKey(ctx, o.Client.Kube, graceKey, minGrace)
		if err != nil {
			return nil, err
		}
		r.progress("config-autoscaler %s set to %s for the run", graceKey, minGrace)
		defer cleanup("restoring config-autoscaler "+graceKey, restore)
	}
	if err := ensureNamespace(ctx, o.Client, o.Namespace); err != nil {
		return nil, err
	}
	if !o.Keep {
		defer cleanup("deleting namespace "+o.Namespace, func(ctx context.Context) error {
			return deleteNamespace(ctx, o.Client, o.Namespace)
		})
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	r.watch = measure.NewWatcher(o.Client.Kube, o.Namespace, o.Clock)
	if err := r.watch.Start(wctx); err != nil {
		return nil, err
	}
	if o.AuditLog != "" {
		a, err := measure.OpenAuditLog(o.AuditLog)
		if err != nil {
			r.progress("no readable audit log (%v): the /scale patch time comes from a Deployment watch", err)
		} else {
			r.audit = a
			r.progress("reading the /scale patches from the audit log %s", o.AuditLog)
		}
	}
	svcs, err := r.createServices(ctx)
	if err != nil {
		return nil, err
	}
	for _, side := range o.Sides {
		got, err := r.side(ctx, side, svcs)
		samples = append(samples, got...)
		if err != nil {
			return samples, fmt.Errorf("%s: %w", side.Name, err)
		}
	}
	return samples, nil
}

// side swaps the side's components in (when it names any) and runs every level on svcs.
func (r *run) side(ctx context.Context, side Side, svcs []*service) ([]report.Sample, error) {
	o := r.o
	t0 := o.Clock.Now()
	if side.Images != nil {
		r.progress("[%s] swapping in activator=%s autoscaler=%s", side.Name, side.Images["activator"], side.Images["autoscaler"])
		if err := o.Swap(ctx, side.Images); err != nil {
			return nil, err
		}
		if err := waitAutoscalerLeads(ctx, o.Client.Kube, side.Images["autoscaler"], 2*time.Minute); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-o.Clock.After(settle):
		}
		r.progress("[%s] components in place and leading (%s)", side.Name, since(o.Clock, t0))
	}
	if err := r.waitZero(ctx, side.Name, svcs); err != nil {
		return nil, err
	}
	// Only a swap restarts the autoscaler under services that already exist.
	if o.Warmup && side.Images != nil {
		if err := r.warmup(ctx, side.Name, svcs); err != nil {
			return nil, err
		}
	}
	var samples []report.Sample
	clean := slices.Clone(svcs)
	for _, level := range o.Levels {
		// Each level starts from all services at zero and nothing else running.
		if len(clean) < len(svcs) {
			if err := r.waitZero(ctx, side.Name, svcs); err != nil {
				return samples, err
			}
			r.fillReady(samples)
			clean = slices.Clone(svcs)
		}
		for round := range o.Repeat {
			if len(clean) < level {
				if err := r.waitZero(ctx, side.Name, svcs); err != nil {
					return samples, err
				}
				r.fillReady(samples)
				clean = slices.Clone(svcs)
			}
			batch := clean[:level]
			clean = clean[level:]
			tr := o.Clock.Now()
			got := r.collect(ctx, r.fire(ctx, batch, side.Name, level, round))
			samples = append(samples, got...)
			r.progress("[%s] parallel %d round %d/%d: %s (%s)", side.Name, level, round+1, o.Repeat, brief(got), since(o.Clock, tr))
			if err := ctx.Err(); err != nil {
				return samples, err
			}
		}
	}
	r.waitReady(ctx, samples)
	r.progress("[%s] done: %d cold starts in %s", side.Name, len(samples), since(o.Clock, t0))
	return samples, nil
}

// warmupBatch bounds the services cold-started at once by the warm-up.
const warmupBatch = 25

// warmup cold-starts every service once, unmeasured, then waits for zero again. A freshly started
// autoscaler (after a swap) holds revisions that are already at zero at an unknown scale, and both
// upstream and Thaw ignore the activator's poke then: without the warm-up, each service's first
// measured cold start would wait for a periodic stat instead of the poke.
func (r *run) warmup(ctx context.Context, side string, svcs []*service) error {
	t0 := r.o.Clock.Now()
	failed := 0
	for i := 0; i < len(svcs); i += warmupBatch {
		for _, f := range r.fire(ctx, svcs[i:min(i+warmupBatch, len(svcs))], side, 0, 0) {
			if !f.sample.OK() {
				failed++
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	r.progress("[%s] warm-up: one unmeasured cold start per service, %d failed (%s)", side, failed, since(r.o.Clock, t0))
	return r.waitZero(ctx, side, svcs)
}

// brief is a round's one-line result.
func brief(ss []report.Sample) string {
	failed := 0
	var firstErr string
	for i := range ss {
		if !ss[i].OK() {
			failed++
			if firstErr == "" {
				firstErr = fmt.Sprintf(" (first: %d %s)", ss[i].Status, ss[i].Error)
			}
		}
	}
	var total []time.Duration
	for _, p := range report.Phases {
		if p.Name == report.Total {
			total = p.Values(ss)
		}
	}
	q := report.Summarize(total)
	return fmt.Sprintf("%d ok, %d failed%s, total p50 %s max %s", len(ss)-failed, failed, firstErr,
		q.P50.Round(time.Millisecond), q.Max.Round(time.Millisecond))
}

// decideWait bounds how long the PodAutoscalers may lag the pods reaching zero (several decision
// ticks): a PA that never reports 0 does not stall the run.
const decideWait = 15 * time.Second

var paGVR = schema.GroupVersionResource{Group: "autoscaling.internal.knative.dev", Version: "v1alpha1", Resource: "podautoscalers"}

// undecided counts the services whose PodAutoscaler does not report desiredScale 0 yet: until the
// autoscaler has decided a new revision at zero, the next request would not be a plain cold start.
func (r *run) undecided(ctx context.Context, svcs []*service) (int, string) {
	list, err := r.o.Client.Dynamic.Resource(paGVR).Namespace(r.o.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return len(svcs), "podautoscalers: " + err.Error()
	}
	desired := map[string]int64{}
	for _, pa := range list.Items {
		if d, ok, _ := unstructured.NestedInt64(pa.Object, "status", "desiredScale"); ok {
			desired[pa.GetName()] = d
		}
	}
	left, example := 0, ""
	for _, s := range svcs {
		if d, ok := desired[s.Revision]; !ok || d != 0 {
			left++
			example = s.Revision + ": podautoscaler desiredScale unset"
			if ok {
				example = fmt.Sprintf("%s: podautoscaler desiredScale %d", s.Revision, d)
			}
		}
	}
	return left, example
}

// waitZero waits until every service's Deployment is at 0, it has no pod left, and its PodAutoscaler
// wants 0.
func (r *run) waitZero(ctx context.Context, side string, svcs []*service) error {
	o := r.o
	t0 := o.Clock.Now()
	ctx, cancel := context.WithTimeout(ctx, o.ZeroTimeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastLog := t0
	var podsZero time.Time // since when no Deployment or pod is left
	for {
		left, example := 0, ""
		for _, s := range svcs {
			if ok, why := r.watch.AtZero(s.Revision, s.deployment()); !ok {
				left++
				example = why
			}
		}
		if left > 0 {
			podsZero = time.Time{}
		} else {
			if podsZero.IsZero() {
				podsZero = o.Clock.Now()
			}
			left, example = r.undecided(ctx, svcs)
			if left > 0 && o.Clock.Since(podsZero) >= decideWait {
				r.progress("[%s] going on without every podautoscaler at desiredScale 0 (%d left, e.g. %s)", side, left, example)
				left = 0
			}
		}
		if left == 0 {
			if d := since(o.Clock, t0); d > time.Second {
				r.progress("[%s] %d services at zero (%s)", side, len(svcs), d)
			}
			return nil
		}
		if now := o.Clock.Now(); now.Sub(lastLog) >= 15*time.Second {
			lastLog = now
			r.progress("[%s] waiting for zero: %d/%d services left (%s), e.g. %s", side, left, len(svcs), since(o.Clock, t0), example)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("services not at zero after %s (%d left, e.g. %s): %w", since(o.Clock, t0), left, example, ctx.Err())
		case <-tick.C:
		}
	}
}
