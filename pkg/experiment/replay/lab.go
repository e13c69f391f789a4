package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/measure"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/runner"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// LabOptions configure a replay on a cluster.
type LabOptions struct {
	Client *kube.Client
	// Namespace is the prefix of each side's namespace ("<ns>-<side>"),
	// deleted after the side unless Keep.
	Namespace string
	// Image is the app every function runs (the lab's autoscale app, whose
	// ?sleep=<ms> is the execution time); CPURequest its and queue-proxy's
	// CPU request.
	Image, CPURequest string
	// Ingress is host:port of the ingress; requests carry the ksvc's host.
	Ingress  string
	Routable ksvc.ProgrammedFunc
	// Sides run in order, as in `thaw coldstart`: Swap switches components,
	// Restore is put back at the end.
	Sides   []runner.Side
	Swap    func(ctx context.Context, im swap.Images) error
	Restore swap.Images
	Plan    *Plan
	// Policies run at once, each on its own services (a ksvc per function
	// and policy). Those of Thaw's autoscaler only are skipped on a side
	// named "upstream".
	Policies []LabPolicy
	// RequestTimeout bounds a request; ZeroTimeout the wait for the
	// services to reach zero before the replay.
	RequestTimeout, ZeroTimeout time.Duration
	// MaxInflight bounds the requests in flight (and their goroutines).
	MaxInflight int
	Keep        bool
	// Progress gets a line per step and every ProgressEvery of the replay.
	Progress      io.Writer
	ProgressEvery time.Duration
	Clock         clock.Clock
}

// LabResult is a finished replay on a cluster.
type LabResult struct {
	Sides    []string
	Outcomes []Outcome
	// Pods holds the watch's figures per side/policy and function.
	Pods              map[runKey][]PodStats
	Started, Finished time.Time
}

// Rows are the result's report rows, one per function of each run.
func (r *LabResult) Rows(p *Plan) []report.Row { return Rows(p, r.Outcomes, r.Pods) }

func (o *LabOptions) validate() error {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("no cluster client"))
	}
	if o.Plan == nil || len(o.Plan.Functions) == 0 {
		errs = append(errs, errors.New("no function to replay"))
	}
	if len(o.Policies) == 0 {
		errs = append(errs, errors.New("no policy"))
	}
	if o.Namespace == "" || o.Image == "" || o.Ingress == "" {
		errs = append(errs, errors.New("namespace, image and ingress are required"))
	}
	if len(o.Sides) == 0 {
		errs = append(errs, errors.New("no side to run"))
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
	if o.MaxInflight <= 0 {
		o.MaxInflight = 2000
	}
	if o.CPURequest == "" {
		o.CPURequest = "1m"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return errors.Join(errs...)
}

// prefixWriter rewrites the cold-start runner's line prefix to the
// replay's, so the shared service creation reads as part of the replay.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	_, err := p.w.Write(bytes.ReplaceAll(b, []byte("coldstart: "), []byte("replay: ")))
	return len(b), err
}

type labRun struct {
	o    LabOptions
	http *http.Client
}

func (r *labRun) progress(format string, args ...any) {
	fmt.Fprintf(r.o.Progress, "replay: "+format+"\n", args...)
}

// cleanupTimeout bounds each restore step, which runs even after Ctrl-C.
const cleanupTimeout = 3 * time.Minute

// RunLab replays the plan on the cluster under every policy, side after
// side. Whatever happens, it puts back config-autoscaler's grace period and
// the components it found, and deletes its namespaces unless Keep.
func RunLab(ctx context.Context, o LabOptions) (res *LabResult, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	r := &labRun{o: o, http: &http.Client{Timeout: o.RequestTimeout, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}}}
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
	grace := o.Policies[0].Grace
	restoreGrace, err := runner.SetConfigAutoscaler(ctx, o.Client.Kube, GraceKey, grace.String())
	if err != nil {
		return nil, err
	}
	r.progress("config-autoscaler %s set to %v for the run", GraceKey, grace)
	defer cleanup("restoring config-autoscaler "+GraceKey, restoreGrace)

	res = &LabResult{Pods: map[runKey][]PodStats{}, Started: o.Clock.Now()}
	for _, side := range o.Sides {
		res.Sides = append(res.Sides, side.Name)
		err := r.side(ctx, side, res)
		if err != nil {
			res.Finished = o.Clock.Now()
			return res, fmt.Errorf("%s: %w", side.Name, err)
		}
	}
	res.Finished = o.Clock.Now()
	return res, nil
}

// sideService is one function's ksvc under one policy.
type sideService struct {
	policy string
	fn     int
	svc    *runner.Service
}

// serviceName names function fn's ksvc under the i-th policy.
func serviceName(policy, fn int) string { return fmt.Sprintf("p%d-f%03d", policy, fn) }

func (r *labRun) side(ctx context.Context, side runner.Side, res *LabResult) error {
	o := r.o
	t0 := o.Clock.Now()
	if side.Images != nil {
		r.progress("[%s] swapping in activator=%s autoscaler=%s", side.Name, side.Images["activator"], side.Images["autoscaler"])
		if err := o.Swap(ctx, side.Images); err != nil {
			return err
		}
		if err := runner.WaitAutoscalerLeads(ctx, o.Client.Kube, side.Images["autoscaler"], 2*time.Minute); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-o.Clock.After(runner.Settle):
		}
		r.progress("[%s] components in place and leading (%s)", side.Name, o.Clock.Since(t0).Round(time.Second))
	}
	var pols []LabPolicy
	for _, lp := range o.Policies {
		if lp.Thaw() && side.Name == "upstream" {
			r.progress("[%s] skipping %s: upstream's autoscaler ignores %s", side.Name, lp.Name, KeepAliveAnnotation)
			continue
		}
		pols = append(pols, lp)
		r.progress("[%s] policy %s", side.Name, lp)
	}
	if len(pols) == 0 {
		return nil
	}
	ns := o.Namespace + "-" + side.Name
	if err := runner.EnsureNamespace(ctx, o.Client, ns); err != nil {
		return err
	}
	if !o.Keep {
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if err := runner.DeleteNamespace(cctx, o.Client, ns); err != nil {
				r.progress("[%s] %v", side.Name, err)
			}
		}()
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	watch := newPodWatch(o.Client.Kube, ns, o.Clock)
	if err := watch.start(wctx); err != nil {
		return err
	}
	svcs, err := r.createServices(ctx, ns, pols)
	if err != nil {
		return err
	}
	if err := r.waitZero(ctx, side.Name, watch, svcs); err != nil {
		return err
	}
	outs, start, end, err := r.replay(ctx, side.Name, pols, svcs, watch)
	res.Outcomes = append(res.Outcomes, outs...)
	for pi, lp := range pols {
		ps := make([]PodStats, len(o.Plan.Functions))
		for fi := range ps {
			s := svcs[pi*len(o.Plan.Functions)+fi].svc
			ps[fi] = PodStats{ScaleUps: watch.ScaleUps(s.Deployment(), start, end), PodSeconds: watch.PodSeconds(s.Revision, start, end)}
		}
		res.Pods[runKey{side.Name, lp.Name}] = ps
	}
	return err
}

// createServices makes a ksvc per function and policy, in policy-major
// order, and waits until they are Ready.
func (r *labRun) createServices(ctx context.Context, ns string, pols []LabPolicy) ([]sideService, error) {
	o := r.o
	var objs []*unstructured.Unstructured
	var out []sideService
	for pi, lp := range pols {
		for fi := range o.Plan.Functions {
			u := runner.KsvcObject(serviceName(pi, fi), ns, o.Image, o.CPURequest)
			u.SetLabels(map[string]string{"app.kubernetes.io/part-of": "thaw-replay"})
			ann, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "annotations")
			for k, v := range lp.Annotations() {
				ann[k] = v
			}
			if err := unstructured.SetNestedStringMap(u.Object, ann, "spec", "template", "metadata", "annotations"); err != nil {
				return nil, err
			}
			objs = append(objs, u)
			out = append(out, sideService{policy: lp.Name, fn: fi})
		}
	}
	svcs, err := runner.CreateServices(ctx, runner.ServiceOptions{Client: o.Client, Namespace: ns, Image: o.Image,
		Routable: o.Routable, Progress: prefixWriter{o.Progress}, Clock: o.Clock}, objs)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].svc = svcs[i]
	}
	return out, nil
}

// decideSettle lets the autoscaler decide the revisions at zero after
// their pods are gone (a few 2 s ticks), so the first request is a plain
// cold start.
const decideSettle = 4 * time.Second

// waitZero waits until every service's Deployment wants 0 and no pod of it
// is ready.
func (r *labRun) waitZero(ctx context.Context, side string, w *podWatch, svcs []sideService) error {
	o := r.o
	t0 := o.Clock.Now()
	ctx, cancel := context.WithTimeout(ctx, o.ZeroTimeout)
	defer cancel()
	last := t0
	for {
		left, example := 0, ""
		for _, s := range svcs {
			if ok, why := w.AtZero(s.svc.Revision, s.svc.Deployment()); !ok {
				left++
				example = why
			}
		}
		if left == 0 {
			r.progress("[%s] %d services at zero (%s)", side, len(svcs), o.Clock.Since(t0).Round(time.Second))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-o.Clock.After(decideSettle):
			}
			return nil
		}
		if now := o.Clock.Now(); now.Sub(last) >= 15*time.Second {
			last = now
			r.progress("[%s] waiting for zero: %d/%d services left (%s), e.g. %s", side, left, len(svcs), now.Sub(t0).Round(time.Second), example)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("services not at zero after %s (%d left, e.g. %s): %w", o.Clock.Since(t0).Round(time.Second), left, example, ctx.Err())
		case <-o.Clock.After(500 * time.Millisecond):
		}
	}
}

// counters are the replay's running figures per policy, for the progress
// lines.
type counters struct{ sent, done, failed, cold atomic.Int64 }

// replay sends every arrival of the plan to each policy's service of its
// function at once, and returns the outcomes with the replay's start and
// end on the client's clock.
func (r *labRun) replay(ctx context.Context, side string, pols []LabPolicy, svcs []sideService, w *podWatch) ([]Outcome, time.Time, time.Time, error) {
	o := r.o
	p := o.Plan
	np, nf := len(pols), len(p.Functions)
	arr := make([]Arrival, 0, len(p.Arrivals)*np)
	for _, a := range p.Arrivals {
		for range np {
			arr = append(arr, a)
		}
	}
	outs := make([]Outcome, len(arr))
	cnt := make([]counters, np)
	start := o.Clock.Now()
	r.progress("[%s] replaying %d requests of %d functions under %d policies over %v (trace %v-%v at speed %g)",
		side, len(arr), nf, np, p.Horizon, p.Window.From, p.Window.To, p.Speed)

	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Go(func() {
		for {
			select {
			case <-pctx.Done():
				return
			case <-o.Clock.After(o.ProgressEvery):
				var b strings.Builder
				for pi, lp := range pols {
					c := &cnt[pi]
					fmt.Fprintf(&b, "; %s %d sent, %d done, %d failed, %d cold", lp.Name, c.sent.Load(), c.done.Load(), c.failed.Load(), c.cold.Load())
				}
				r.progress("[%s] %v/%v%s", side, o.Clock.Since(start).Round(time.Second), p.Horizon, b.String())
			}
		}
	})
	err := Dispatch(ctx, o.Clock, start, arr, o.MaxInflight, func(ctx context.Context, i int, late time.Duration) {
		ai, pi := i/np, i%np
		a := p.Arrivals[ai]
		s := svcs[pi*nf+a.Fn].svc
		out := &outs[i]
		*out = Outcome{Side: side, Policy: pols[pi].Name, Fn: a.Fn, Arrival: ai, Service: s.Name, Late: late, Sleep: a.Sleep}
		cnt[pi].sent.Add(1)
		r.send(ctx, out, s, w)
		c := &cnt[pi]
		c.done.Add(1)
		if !out.OK() {
			c.failed.Add(1)
		}
		if out.Cold {
			c.cold.Add(1)
		}
	})
	end := o.Clock.Now()
	stopProgress()
	pwg.Wait()
	var b strings.Builder
	for pi, lp := range pols {
		c := &cnt[pi]
		fmt.Fprintf(&b, "; %s %d requests, %d failed, %d cold", lp.Name, c.done.Load(), c.failed.Load(), c.cold.Load())
	}
	r.progress("[%s] replay done in %s%s", side, end.Sub(start).Round(time.Second), b.String())
	return outs, start, end, err
}

// send makes one request and fills its outcome.
func (r *labRun) send(ctx context.Context, out *Outcome, s *runner.Service, w *podWatch) {
	url := "http://" + r.o.Ingress + "/?sleep=" + strconv.FormatInt(out.Sleep.Milliseconds(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		out.Error = err.Error()
		return
	}
	req.Host = s.Host
	// Thaw's activator answers with its cold-start timeline or "warm";
	// upstream's ignores the header.
	req.Header.Set(measure.RequestHeader, "1")
	out.ReadyPods = w.Ready(s.Revision)
	out.Replicas = w.Replicas(s.Deployment())
	out.Sent = r.o.Clock.Now()
	defer out.classify()
	resp, err := r.http.Do(req)
	if err != nil {
		out.Latency = r.o.Clock.Since(out.Sent)
		out.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	out.Latency = r.o.Clock.Since(out.Sent)
	out.Status = resp.StatusCode
	if err != nil {
		out.Error = "reading body: " + err.Error()
	}
	if v := resp.Header.Get(measure.ResponseHeader); v != "" {
		if _, warm, err := measure.ParseHeader(v); err == nil {
			out.Header = "cold"
			if warm {
				out.Header = "warm"
			}
		}
	}
}
