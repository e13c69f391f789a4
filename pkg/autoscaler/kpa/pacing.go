package kpa

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/thaw-dev/thaw/pkg/autoscaler/pacer"
	"github.com/thaw-dev/thaw/pkg/coldstart"
)

// pacingTick is how often the pacer is told the time: its window regrows,
// stuck pods stop counting, and a switch to off releases what waits. Pod
// events release waiting wake-ups at once; the tick only catches the rest.
const pacingTick = time.Second

// PokeTimer, when Deps.ColdStarts implements it, gives the time a wake-up
// arrived (its first poke), which orders paced scale-ups from zero.
type PokeTimer interface {
	PokedAt(key types.NamespacedName) (time.Time, bool)
}

// PacedRecorder, when Deps.ColdStarts implements it, hears how long a scale
// from zero waited for pod-start capacity.
type PacedRecorder interface {
	Paced(key types.NamespacedName, d time.Duration)
}

var (
	_ PokeTimer     = (*coldstart.Recorder)(nil)
	_ PacedRecorder = (*coldstart.Recorder)(nil)
)

var (
	descPacingWindow   = prometheus.NewDesc("thaw_autoscaler_wake_pacing_window", "Estimated pod-start capacity: pods the wake-up pacer lets start at once, probed by the start rate the cluster delivers.", nil, nil)
	descPacingStarting = prometheus.NewDesc("thaw_autoscaler_wake_pacing_starting_pods", "Pods asked for and not yet ready, as the wake-up pacer counts them.", nil, nil)
	descPacingQueue    = prometheus.NewDesc("thaw_autoscaler_wake_pacing_queue", "Scale-ups from zero waiting for pod-start capacity.", nil, nil)
	descPacingBaseline = prometheus.NewDesc("thaw_autoscaler_wake_pacing_baseline_seconds", "Least start latency (scale from zero to first pod ready) seen lately.", nil, nil)
	descPacingRate     = prometheus.NewDesc("thaw_autoscaler_wake_pacing_delivered_rate", "Pods a second the cluster started over the wake-up pacer's last measured round while wake-ups waited (Little's law; 0 before any).", nil, nil)
)

// pacing holds scale-ups from zero in arrival order while the cluster is
// starting as many pods as it can (pkg/autoscaler/pacer), fed by the pod informer.
// Waiting wake-ups wait in the pacer, never in a reconcile: the reconcile
// and the wake path both ask admit before a /scale patch from 0, and a
// wake-up admitted later goes to the wake queue.
type pacing struct {
	r     *Reconciler
	p     *pacer.Pacer
	paced prometheus.Histogram
}

// newPacing registers the pacer's handlers on the pod and PA informers.
func newPacing(r *Reconciler) (*pacing, error) {
	pc := &pacing{r: r, p: pacer.New(pacer.Options{}),
		paced: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "thaw_autoscaler_wake_paced_seconds",
			Help:    "How long scale-ups from zero waited for pod-start capacity (0: not at all).",
			Buckets: coldstart.Buckets(),
		})}
	if _, err := r.d.Pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pc.pod(obj, false) },
		UpdateFunc: func(_, obj any) { pc.pod(obj, false) },
		DeleteFunc: func(obj any) { pc.pod(obj, true) },
	}); err != nil {
		return nil, fmt.Errorf("adding pacing pod handler: %w", err)
	}
	// A deleted PA's wake-up must not hold capacity until it expires.
	if _, err := r.d.PodAutoscalers.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: pc.paDeleted,
	}); err != nil {
		return nil, fmt.Errorf("adding pacing PA handler: %w", err)
	}
	return pc, nil
}

// paDeleted forgets a deleted PA's wake-up.
func (pc *pacing) paDeleted(obj any) {
	if m, ok := unwrap(obj); ok {
		pc.release(pc.p.Forget(pc.r.d.Clock.Now(), types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}))
	}
}

// pod tells the pacer about a revision pod's state.
func (pc *pacing) pod(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = d.Obj, true
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	rev := p.Labels[revisionLabel]
	if rev == "" {
		return
	}
	st := pacer.PodStarting
	switch {
	case deleted || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		st = pacer.PodGone
	case p.Status.Phase == corev1.PodRunning && podReady(p):
		st = pacer.PodReady
	}
	key := types.NamespacedName{Namespace: p.Namespace, Name: rev}
	pc.release(pc.p.Pod(pc.r.d.Clock.Now(), key, p.Name, p.CreationTimestamp.Time, st))
}

// release sends admitted wake-ups to the wake path, which scales them.
func (pc *pacing) release(keys []types.NamespacedName) {
	for _, k := range keys {
		pc.r.wake.queue.Add(k)
	}
}

// admit says whether key may be scaled from 0 to desired now; if not, it
// waits in the pacer, which releases it to the wake path later.
func (pc *pacing) admit(key types.NamespacedName, desired int32) bool {
	now := pc.r.d.Clock.Now()
	if !pc.r.d.Config().WakePacing {
		pc.release(pc.p.Flush(now))
		return true
	}
	arrival := now
	if t, ok := pc.r.d.ColdStarts.(PokeTimer); ok {
		if at, ok := t.PokedAt(key); ok {
			arrival = at
		}
	}
	a := pc.p.Offer(now, key, arrival, int(desired))
	if a.OK && a.First {
		pc.paced.Observe(a.Paced.Seconds())
		if rec, ok := pc.r.d.ColdStarts.(PacedRecorder); ok && a.Paced > 0 {
			rec.Paced(key, a.Paced)
		}
	}
	return a.OK
}

// withdraw drops key's wake-up: it wants no pods any more.
func (pc *pacing) withdraw(key types.NamespacedName) {
	pc.release(pc.p.Withdraw(pc.r.d.Clock.Now(), key))
}

// start ticks the pacer until ctx ends; wg tracks it.
func (pc *pacing) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := pc.r.d.Clock.NewTicker(pacingTick)
		defer t.Stop()
		var last pacer.Stats
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				now := pc.r.d.Clock.Now()
				if !pc.r.d.Config().WakePacing {
					pc.release(pc.p.Flush(now))
				}
				pc.release(pc.p.Tick(now))
				// One line a second while wake-ups wait or the estimate
				// moves, so a paced burst can be followed in the log.
				if st := pc.p.Stats(now); st.Queued > 0 || last.Queued > 0 || st.Window != last.Window {
					pc.r.d.Logger.Infow("Wake pacing", "window", st.Window, "starting", st.Starting,
						"queued", st.Queued, "baseline", st.Baseline, "rate", st.Rate)
					last = st
				}
			}
		}
	}()
}

// Describe implements prometheus.Collector.
func (pc *pacing) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPacingWindow, descPacingStarting, descPacingQueue, descPacingBaseline, descPacingRate} {
		ch <- d
	}
	pc.paced.Describe(ch)
}

// Collect implements prometheus.Collector.
func (pc *pacing) Collect(ch chan<- prometheus.Metric) {
	st := pc.p.Stats(pc.r.d.Clock.Now())
	for _, m := range []struct {
		d *prometheus.Desc
		v float64
	}{{descPacingWindow, st.Window}, {descPacingStarting, float64(st.Starting)},
		{descPacingQueue, float64(st.Queued)}, {descPacingBaseline, st.Baseline.Seconds()},
		{descPacingRate, st.Rate}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, m.v)
	}
	pc.paced.Collect(ch)
}
