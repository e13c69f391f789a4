package runner

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/load"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/report"
	csrunner "github.com/thaw-dev/thaw/pkg/experiment/coldstart/runner"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
	"github.com/thaw-dev/thaw/test/upstream"
)

// cleanupTimeout bounds each restore step, which runs even after Ctrl-C.
const cleanupTimeout = 5 * time.Minute

// shapeTimeout bounds the wait for the shape after a swap or a scenario: a container SIGKILLed
// several times waits out the kubelet's crash back-off before it is Ready again.
const shapeTimeout = 6 * time.Minute

// settle lets the activators' stat websockets reach the autoscalers that just took their buckets.
const settle = 10 * time.Second

type run struct {
	o   Options
	rnd *rand.Rand
	cl  *upstream.Cluster
	// doomed is the never-ready scenario's service (nil when it does not run).
	doomed *load.Target
}

// Names of the never-ready scenario's service and of the ConfigMap its pods mount.
const (
	doomedService   = "never"
	doomedConfigMap = "chaos-never"
)

func (r *run) progress(format string, args ...any) {
	fmt.Fprintf(r.o.Progress, "chaos: "+format+"\n", args...)
}

// Run runs every scenario on every side and returns what it recorded. Whatever happens (an error,
// Ctrl-C), the faults are undone, and config-autoscaler, the shape and the components it found are
// put back, and its namespace is deleted unless Keep.
func Run(ctx context.Context, o Options) (runs []*report.Run, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	r := &run{o: o, rnd: rand.New(rand.NewPCG(o.Seed, o.Seed^0x5eed)),
		cl: &upstream.Cluster{Kube: o.Client.Kube, Clock: o.Clock, Logf: func(f string, a ...any) { fmt.Fprintf(o.Progress, "chaos: "+f+"\n", a...) }}}
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
	saved, err := r.cl.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the shape to restore: %w", err)
	}
	defer cleanup("restoring replicas, buckets and Lease timings", func(ctx context.Context) error {
		return r.cl.Restore(ctx, saved, shapeTimeout)
	})
	restoreGrace, err := csrunner.SetConfigAutoscaler(ctx, o.Client.Kube, "scale-to-zero-grace-period", "6s")
	if err != nil {
		return nil, err
	}
	defer cleanup("restoring config-autoscaler scale-to-zero-grace-period", restoreGrace)
	if _, err := o.Client.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create namespace %s: %w", o.Namespace, err)
	}
	if !o.Keep {
		defer cleanup("deleting namespace "+o.Namespace, func(ctx context.Context) error {
			err := o.Client.Kube.CoreV1().Namespaces().Delete(ctx, o.Namespace, metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		})
	}
	steady, cold, err := r.services(ctx)
	if err != nil {
		return nil, err
	}
	for _, side := range o.Sides {
		if err := r.prepare(ctx, side); err != nil {
			return runs, fmt.Errorf("%s: %w", side.Name, err)
		}
		for _, sc := range o.Scenarios {
			rr, err := r.scenario(ctx, side, sc, steady, cold)
			if rr != nil {
				runs = append(runs, rr)
			}
			if err != nil {
				return runs, fmt.Errorf("%s %s: %w", side.Name, sc.Name, err)
			}
		}
	}
	return runs, nil
}

// prepare swaps the side's components in and gives them the run's shape.
func (r *run) prepare(ctx context.Context, side Side) error {
	o := r.o
	t0 := o.Clock.Now()
	if side.Images != nil {
		r.progress("[%s] swapping in activator=%s autoscaler=%s", side.Name, side.Images["activator"], side.Images["autoscaler"])
		if err := o.Swap(ctx, side.Images); err != nil {
			return err
		}
	}
	r.progress("[%s] %d activators and autoscalers, %d buckets, Leases %v", side.Name, o.Shape.Replicas, o.Shape.Buckets, upstream.LeaseTimings)
	if err := r.cl.ApplyShape(ctx, o.Shape); err != nil {
		return err
	}
	return r.waitShape(ctx, side, t0)
}

func (r *run) waitShape(ctx context.Context, side Side, t0 time.Time) error {
	if err := r.cl.WaitShape(ctx, r.o.Shape, side.Images, shapeTimeout); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.o.Clock.After(r.o.Settle):
	}
	r.progress("[%s] components in place, every bucket held (%s)", side.Name, r.o.Clock.Since(t0).Round(time.Second))
	return nil
}

// injector builds the scenario's fault.
func (r *run) injector(sc Scenario) (fault.Injector, error) {
	kc := r.o.Client.Kube
	switch sc.Name {
	case "autoscaler-kill":
		return fault.AutoscalerKill(fault.Killer{Kube: kc, Containerd: r.o.Containerd, Component: "autoscaler"}, r.rnd), nil
	case "activator-kill":
		return fault.ActivatorKill(fault.Killer{Kube: kc, Containerd: r.o.Containerd, Component: "activator"},
			fault.Pods{Kube: kc, Component: "activator", Rand: r.rnd}), nil
	case "activator-delete":
		return fault.PodDelete(fault.Pods{Kube: kc, Component: "activator", Rand: r.rnd}), nil
	case "autoscaler-cutoff":
		if r.o.Containerd == nil {
			return nil, errors.New("autoscaler-cutoff needs the lab")
		}
		return fault.Cutoff(kc, *r.o.Containerd, fault.Pods{Kube: kc, Component: "activator", Rand: r.rnd}, 8080), nil
	case "autoscaler-delete":
		return fault.AutoscalerDelete(fault.Pods{Kube: kc, Component: "autoscaler", Rand: r.rnd}, r.rnd), nil
	case "activator-kill-all":
		return fault.ActivatorKillAll(fault.Killer{Kube: kc, Containerd: r.o.Containerd, Component: "activator"},
			fault.Pods{Kube: kc, Component: "activator", Rand: r.rnd}), nil
	case "activator-delete-all":
		return fault.PodDeleteAll(fault.Pods{Kube: kc, Component: "activator", Rand: r.rnd}), nil
	case "network-loss":
		if r.o.Containerd == nil {
			return nil, errors.New("network-loss needs the lab")
		}
		return fault.NetworkLoss(*r.o.Containerd, fault.Pods{Kube: kc, Component: "activator", Rand: r.rnd}, r.o.Loss), nil
	case "network-delay":
		if r.o.Containerd == nil {
			return nil, errors.New("network-delay needs the lab")
		}
		return fault.NetworkDelay(*r.o.Containerd, fault.Pods{Kube: kc, Component: "activator", Rand: r.rnd}, r.o.Delay,
			fault.NFQueueDelayer(r.o.Delay, 0)), nil
	case "apiserver-outage":
		if r.o.Daemons == nil {
			return nil, errors.New("apiserver-outage needs the lab")
		}
		return fault.Outage{Daemons: r.o.Daemons, Name: "kube-apiserver", Clock: r.o.Clock,
			Ready: func(ctx context.Context) error {
				_, err := kc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
				return err
			}}, nil
	case "user-pod-kill":
		return fault.UserPodKill{Killer: fault.Killer{Kube: kc, Containerd: r.o.Containerd, Component: fault.UserContainer, Namespace: r.o.Namespace},
			Service: func(name string) bool { return strings.HasPrefix(name, "cold-") },
			// A cold pod lives about 15 s (6 s window, 6 s grace): kill it in its first seconds.
			Young: 10 * time.Second, Wait: min(r.o.Period/2, 15*time.Second), Clock: r.o.Clock}, nil
	case "injected":
		return fault.Injected{Kube: kc, Faults: r.o.Inject, Hold: r.o.Hold, Clock: r.o.Clock}, nil
	case "never-ready":
		if r.doomed == nil {
			return nil, errors.New("never-ready: its service was not created")
		}
		return fault.ConfigMapRemove(kc, r.o.Namespace, doomedConfigMap), nil
	}
	return nil, fmt.Errorf("unknown scenario %q", sc.Name)
}

// scenario runs the loads, the quiet phase, the faults and the recovery phase on one side.
func (r *run) scenario(ctx context.Context, side Side, sc Scenario, steady load.Target, cold []load.Target) (*report.Run, error) {
	o := r.o
	inj, err := r.injector(sc)
	if err != nil {
		return nil, err
	}
	rr := &report.Run{Side: side.Name, Scenario: sc.Name, SLO: sc.SLO, Steady: steady.Name}
	if sc.Doomed {
		rr.Doomed = r.doomed.Name
		r.waitZero(ctx, side, sc, r.doomed.Name)
	}
	var mu sync.Mutex
	record := func(out load.Outcome) { mu.Lock(); rr.Outcomes = append(rr.Outcomes, out); mu.Unlock() }

	sctx, stopSamplers := context.WithCancel(ctx)
	lctx, stopLoads := context.WithCancel(ctx)
	var wg sync.WaitGroup
	rr.Start = o.Clock.Now()
	wg.Go(func() { r.sampleScale(sctx, rr, &mu) })
	wg.Go(func() { r.sampleLeases(sctx, rr, &mu) })
	var loads sync.WaitGroup
	client := load.NewClient()
	loads.Go(func() {
		load.Generator{Stream: "steady", Ingress: o.Ingress, Targets: []load.Target{steady}, Client: client,
			Interval: time.Duration(float64(time.Second) / o.Rate), Timeout: o.Timeout, Clock: o.Clock}.Run(lctx, record)
	})
	loads.Go(func() {
		load.Generator{Stream: "cold", Ingress: o.Ingress, Targets: cold, Client: client,
			Interval: o.ColdEvery, Timeout: o.Timeout, Clock: o.Clock}.Run(lctx, record)
	})
	// The never-ready service's load starts with the fault, so that its first request finds it at
	// zero with its pods unable to start.
	var doomedOnce sync.Once
	startDoomed := func() {
		doomedOnce.Do(func() {
			loads.Go(func() {
				load.Generator{Stream: "doomed", Ingress: o.Ingress, Targets: []load.Target{*r.doomed}, Client: client,
					Interval: o.DoomedEvery, Timeout: o.Timeout, Clock: o.Clock}.Run(lctx, record)
			})
		})
	}
	wg.Go(func() { r.report(sctx, rr, &mu) })
	finish := func() {
		stopLoads()
		loads.Wait()
		rr.End = o.Clock.Now()
		stopSamplers()
		wg.Wait()
		rr.Summary = rr.Summarize()
		s := rr.Summary
		r.progress("[%s/%s] %d/%d requests lost (before %d, during %d, after %d), success %.4f against SLO %.3f, %d injections, max Δdesired %d, hand-off p50 %s max %s",
			side.Name, sc.Name, s.All.Failed, s.All.Total, s.Phases[report.Before].Failed, s.Phases[report.During].Failed,
			s.Phases[report.After].Failed, s.Exposed.Ratio(), sc.SLO, s.Injections, s.MaxDeviation, s.HandOffP50.Round(10*time.Millisecond), s.HandOffMax.Round(10*time.Millisecond))
	}

	r.progress("[%s/%s] loads on: %.0f req/s to %s, one cold request every %s over %d services; faults in %s", side.Name, sc.Name,
		o.Rate, steady.Name, o.ColdEvery, len(cold), o.Before)
	if !sleep(ctx, o, o.Before) {
		finish()
		return rr, ctx.Err()
	}
	period := o.Period
	hold := time.Duration(0)
	if sc.Hold {
		hold = o.Hold
		period = max(period, 2*hold)
	}
	if sc.Once {
		period = o.Duration
	}
	mu.Lock()
	rr.FaultStart = o.Clock.Now()
	mu.Unlock()
	jitter := o.Jitter
	if sc.Once {
		jitter = 0
	}
	marks, ferr := fault.Schedule{Injector: inj, Period: period, Jitter: jitter, Duration: o.Duration, Hold: hold,
		UndoTimeout: sc.UndoTimeout, Clock: o.Clock, Rand: r.rnd, OnMark: func(m fault.Mark) {
			r.progress("[%s/%s] %s %s %s", side.Name, sc.Name, m.Kind, m.Target, m.Detail)
			if sc.Doomed && m.Kind == "inject" {
				startDoomed()
			}
		}}.Run(ctx)
	mu.Lock()
	rr.FaultEnd = o.Clock.Now()
	rr.Marks = marks
	mu.Unlock()
	if ferr != nil {
		rr.Err = ferr.Error()
		if ctx.Err() != nil {
			finish()
			return rr, ferr
		}
		// The faults stopped early (targets missing, an undo failed): the requests still count, and
		// the other scenarios and sides still run; the error is in the report.
		r.progress("[%s/%s] faults stopped early: %v", side.Name, sc.Name, ferr)
	}
	r.progress("[%s/%s] faults over, %s of recovery", side.Name, sc.Name, o.After)
	ok := sleep(ctx, o, o.After)
	finish()
	if !ok {
		return rr, ctx.Err()
	}
	// The next scenario starts from the full shape again.
	if err := r.waitShape(ctx, side, o.Clock.Now()); err != nil {
		return rr, err
	}
	return rr, nil
}

// zeroTimeout bounds the wait for the never-ready service to be at zero before its fault.
const zeroTimeout = 90 * time.Second

// waitZero waits until the service has no pod left, so that the fault meets a cold start; after
// zeroTimeout it says so and goes on (the requests still count).
func (r *run) waitZero(ctx context.Context, side Side, sc Scenario, service string) {
	t0 := r.o.Clock.Now()
	for {
		list, err := r.o.Client.Kube.CoreV1().Pods(r.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service=" + service})
		if err == nil && len(list.Items) == 0 {
			r.progress("[%s/%s] %s at zero (%s)", side.Name, sc.Name, service, r.o.Clock.Since(t0).Round(time.Second))
			return
		}
		if r.o.Clock.Since(t0) > zeroTimeout {
			r.progress("[%s/%s] %s not at zero after %s: going on", side.Name, sc.Name, service, zeroTimeout)
			return
		}
		if !sleep(ctx, r.o, time.Second) {
			return
		}
	}
}

func sleep(ctx context.Context, o Options, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-o.Clock.After(d):
		return true
	}
}

// report prints a progress line every 10 s: requests and losses so far and in the last 10 s.
func (r *run) report(ctx context.Context, rr *report.Run, mu *sync.Mutex) {
	t := r.o.Clock.NewTicker(10 * time.Second)
	defer t.Stop()
	seen, lostSeen := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		mu.Lock()
		n, lost := len(rr.Outcomes), 0
		for _, x := range rr.Outcomes {
			if x.Failed() {
				lost++
			}
		}
		phase := rr.Phase(r.o.Clock.Now())
		var desired int64 = -1
		for i := len(rr.Scale) - 1; i >= 0; i-- {
			if rr.Scale[i].PA == rr.Steady {
				desired = rr.Scale[i].Desired
				break
			}
		}
		mu.Unlock()
		r.progress("[%s/%s] %s %s: %d requests, %d lost (last 10s: %d, %d lost), steady desired scale %d", rr.Side, rr.Scenario,
			r.o.Clock.Since(rr.Start).Round(time.Second), phase, n, lost, n-seen, lost-lostSeen, desired)
		seen, lostSeen = n, lost
	}
}

var paGVR = schema.GroupVersionResource{Group: "autoscaling.internal.knative.dev", Version: "v1alpha1", Resource: "podautoscalers"}

// sampleScale records every PodAutoscaler's desired and actual scale once a second.
func (r *run) sampleScale(ctx context.Context, rr *report.Run, mu *sync.Mutex) {
	t := r.o.Clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		list, err := r.o.Client.Dynamic.Resource(paGVR).Namespace(r.o.Namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			now := r.o.Clock.Now()
			mu.Lock()
			for _, pa := range list.Items {
				d, ok, _ := unstructured.NestedInt64(pa.Object, "status", "desiredScale")
				a, _, _ := unstructured.NestedInt64(pa.Object, "status", "actualScale")
				if ok {
					rr.Scale = append(rr.Scale, report.ScaleSample{Time: now, PA: paService(&pa), Desired: d, Actual: a})
				}
			}
			mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// paService names a PodAutoscaler by its service (the revision's name changes between runs).
func paService(pa *unstructured.Unstructured) string {
	if s := pa.GetLabels()["serving.knative.dev/service"]; s != "" {
		return s
	}
	return pa.GetName()
}

// sampleLeases records the autoscaler's bucket Leases four times a second (hand-off gaps).
func (r *run) sampleLeases(ctx context.Context, rr *report.Run, mu *sync.Mutex) {
	t := r.o.Clock.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		list, err := r.o.Client.Kube.CoordinationV1().Leases(fault.SystemNamespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			now := r.o.Clock.Now()
			mu.Lock()
			for _, l := range list.Items {
				if !strings.HasPrefix(l.Name, "autoscaler-bucket-") {
					continue
				}
				s := report.LeaseSample{Time: now, Lease: l.Name, Holder: ptr.Deref(l.Spec.HolderIdentity, "")}
				if l.Spec.RenewTime != nil {
					s.Renew = l.Spec.RenewTime.Time
				}
				rr.Leases = append(rr.Leases, s)
			}
			mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// services creates the steady service (min-scale 1, a concurrency target of 1 so that its desired
// scale follows the load) and the cold ones (scale to zero after a 6 s window), and waits until they
// are Ready and routable.
func (r *run) services(ctx context.Context) (load.Target, []load.Target, error) {
	o := r.o
	mk := func(name string, ann map[string]any) *unstructured.Unstructured {
		ann["autoscaling.knative.dev/class"] = "kpa.autoscaling.knative.dev"
		ann["queue.sidecar.serving.knative.dev/cpu-resource-request"] = "1m"
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "serving.knative.dev/v1", "kind": "Service",
			"metadata": map[string]any{"name": name, "namespace": o.Namespace, "labels": map[string]any{"app.kubernetes.io/part-of": "thaw-chaos"}},
			"spec": map[string]any{"template": map[string]any{
				"metadata": map[string]any{"annotations": ann},
				"spec": map[string]any{"containers": []any{map[string]any{
					"image": o.Image, "resources": map[string]any{"requests": map[string]any{"cpu": "1m"}},
				}}},
			}},
		}}
	}
	objs := []*unstructured.Unstructured{mk("steady", map[string]any{
		"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/target": "1"})}
	names := []string{"steady"}
	for i := range o.ColdServices {
		n := fmt.Sprintf("cold-%02d", i)
		names = append(names, n)
		objs = append(objs, mk(n, map[string]any{"autoscaling.knative.dev/window": "6s"}))
	}
	doomed := slices.ContainsFunc(o.Scenarios, func(s Scenario) bool { return s.Doomed })
	if doomed {
		// never-ready's service mounts a ConfigMap that the fault deletes; a short progress deadline
		// lets the revision report that its pods cannot start while the fault lasts.
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: doomedConfigMap, Namespace: o.Namespace},
			Data: map[string]string{"why": "mounted by the never-ready scenario's service"}}
		if _, err := o.Client.Kube.CoreV1().ConfigMaps(o.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return load.Target{}, nil, err
		}
		svc := mk(doomedService, map[string]any{"autoscaling.knative.dev/window": "6s", "serving.knative.dev/progress-deadline": "12s"})
		spec := svc.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		spec["volumes"] = []any{map[string]any{"name": "never", "configMap": map[string]any{"name": doomedConfigMap}}}
		c := spec["containers"].([]any)[0].(map[string]any)
		c["volumeMounts"] = []any{map[string]any{"name": "never", "mountPath": "/etc/chaos-never", "readOnly": true}}
		objs = append(objs, svc)
		names = append(names, doomedService)
	}
	if err := o.Client.Apply(ctx, objs); err != nil {
		return load.Target{}, nil, err
	}
	var targets []load.Target
	for _, n := range names {
		if _, err := ksvc.WaitReady(ctx, o.Client, o.Namespace, n, 5*time.Minute); err != nil {
			return load.Target{}, nil, err
		}
		u, err := o.Client.Dynamic.Resource(ksvc.ServiceGVR).Namespace(o.Namespace).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return load.Target{}, nil, err
		}
		raw, _, _ := unstructured.NestedString(u.Object, "status", "url")
		p, err := url.Parse(raw)
		if err != nil || p.Host == "" {
			return load.Target{}, nil, fmt.Errorf("ksvc %s: no URL in status (%q)", n, raw)
		}
		if o.Routable != nil {
			if err := ksvc.WaitRoutable(ctx, o.Client, o.Namespace, n, o.Routable, time.Minute); err != nil {
				return load.Target{}, nil, err
			}
		}
		path := "/"
		if n == "steady" {
			path = fmt.Sprintf("/?sleep=%d", o.Sleep.Milliseconds())
		}
		targets = append(targets, load.Target{Name: n, Host: p.Host, Path: path})
	}
	cold := targets[1 : 1+o.ColdServices]
	if doomed {
		r.doomed = &targets[len(targets)-1]
	}
	r.progress("services Ready in %s: steady (min-scale 1, target 1), %d cold%s", o.Namespace, o.ColdServices,
		map[bool]string{true: " and " + doomedService + " (never-ready)"}[doomed])
	return targets[0], cold, nil
}
