package endpoints

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

// dests are the addresses of one revision's private Endpoints, split by Kubernetes readiness.
type dests struct {
	ready, notReady sets.Set[string]
}

type probeResult struct {
	dest      string
	clusterIP bool
	outcome   probeOutcome
	timedOut  bool
	err       error
}

// clusterIPFunc returns the private service "clusterIP:port" of a revision for a port name.
type clusterIPFunc func(rev types.NamespacedName, portName string) (string, error)

// watcher owns the probing state of one revision. All state is confined to its run goroutine; the
// manager talks to it through setDests (latest value wins) and stop.
type watcher struct {
	rev       types.NamespacedName
	info      *revisions.Info
	opts      *Options
	sink      BackendSink
	clusterIP clusterIPFunc
	logger    *zap.SugaredLogger

	mu      sync.Mutex
	pending *dests
	notify  chan struct{} // capacity 1: wakes run when pending is set
	deleted chan struct{} // closed when the revision's Endpoints are gone
	delOnce sync.Once
	done    chan struct{} // closed when run returns

	// State owned by run.
	cur, prev       dests
	all             sets.Set[string]        // cur.ready ∪ cur.notReady
	passed          sets.Set[string]        // pods whose latest probe passed
	outcomes        map[string]probeOutcome // latest finished probe per pod
	inflight        sets.Set[string]
	timeout         time.Duration
	podsAddressable bool
	clusterIPDest   string // set once the ClusterIP passed a probe
	clusterInflight bool
	fallbackArmed   bool // a pod probe round ran since the last ClusterIP fallback probe
	sent            *throttler.Backends
	results         chan probeResult
	ticker          clock.Ticker
	tickerPeriod    time.Duration
	coldSince       time.Time // when the revision last had pods but none healthy; zero otherwise
}

func newWatcher(rev types.NamespacedName, info *revisions.Info, opts *Options, sink BackendSink,
	cip clusterIPFunc) *watcher {
	return &watcher{
		rev:             rev,
		info:            info,
		opts:            opts,
		sink:            sink,
		clusterIP:       cip,
		logger:          opts.Logger.With(zap.String("knative.dev/key", rev.String())),
		notify:          make(chan struct{}, 1),
		deleted:         make(chan struct{}),
		done:            make(chan struct{}),
		passed:          sets.New[string](),
		outcomes:        map[string]probeOutcome{},
		inflight:        sets.New[string](),
		timeout:         opts.ProbeTimeout,
		podsAddressable: true,
		// The sink starts with no backends for a revision, so an empty first update is not sent.
		sent: &throttler.Backends{},
	}
}

// setDests hands the latest Endpoints addresses to the watcher without blocking.
func (w *watcher) setDests(d dests) {
	w.mu.Lock()
	w.pending = &d
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// stop ends the watcher; it sends an empty update before returning.
func (w *watcher) stop() { w.delOnce.Do(func() { close(w.deleted) }) }

// run is the watcher's only goroutine. prev, when not nil, is the done channel of the watcher this one
// replaces: waiting for it keeps that watcher's final empty update from overtaking ours.
func (w *watcher) run(ctx context.Context, prev <-chan struct{}) {
	defer close(w.done)
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
			return
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	// Probes in flight end with ctx; their sends select on ctx too, so none is left blocked.
	defer cancel()
	// Bounded: at most one probe per pod plus one for the ClusterIP is in flight; the buffer only
	// spares probe goroutines a wait on the loop.
	w.results = make(chan probeResult, 16)
	w.cur = dests{ready: sets.New[string](), notReady: sets.New[string]()}
	w.all = sets.New[string]()
	defer w.stopTicker()

	for {
		var tick <-chan time.Time
		if w.ticker != nil {
			tick = w.ticker.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-w.deleted:
			w.send(throttler.Backends{})
			return
		case <-w.notify:
			w.mu.Lock()
			d := w.pending
			w.pending = nil
			w.mu.Unlock()
			if d != nil {
				w.prev, w.cur = w.cur, *d
				w.all = d.ready.Union(d.notReady)
				w.endpointsChanged()
			}
			w.startProbes(ctx, false)
		case r := <-w.results:
			w.handleResult(r)
		case <-tick:
			w.startProbes(ctx, true)
		}
		w.maybeFallback(ctx)
		w.updateTicker()
	}
}

func (w *watcher) meshMode() MeshMode { return w.opts.MeshMode }

// endpointsChanged drops state of pods that are gone and re-probes pods Kubernetes no longer calls ready.
func (w *watcher) endpointsChanged() {
	all := w.all
	if all.Len() == 0 {
		// Scaled to zero: start over, and tell the sink at once. The learned probe timeout stays: the
		// network has not changed, and the next cold start should not pay for learning it again.
		w.passed.Clear()
		clear(w.outcomes)
		w.clusterIPDest = ""
		w.send(throttler.Backends{})
		return
	}
	for d := range w.passed {
		if !all.Has(d) || (w.prev.ready.Has(d) && w.cur.notReady.Has(d)) {
			// Gone, or Kubernetes no longer calls it ready: forget the pass so it is probed again now.
			w.passed.Delete(d)
			delete(w.outcomes, d)
		}
	}
	for d := range w.outcomes {
		if !all.Has(d) {
			delete(w.outcomes, d)
		}
	}
	w.publish()
}

// usingClusterIP reports whether traffic goes through the private service instead of pods.
func (w *watcher) usingClusterIP() bool {
	return w.meshMode() == MeshEnabled || !w.podsAddressable
}

// healthy is the set of pods the sink may route to.
func (w *watcher) healthy() sets.Set[string] {
	h := sets.New[string]()
	for d := range w.passed {
		if w.info.ProbeOptimisation || w.cur.ready.Has(d) {
			h.Insert(d)
		}
	}
	if w.meshMode() == MeshDisabled {
		// Without mesh sniffing there is no reason to doubt Kubernetes.
		h = h.Union(w.cur.ready)
	}
	return h
}

// needsProbe reports whether pod d must still be probed.
func (w *watcher) needsProbe(d string) bool {
	if w.usingClusterIP() || w.passed.Has(d) {
		return false
	}
	if w.meshMode() == MeshDisabled && w.cur.ready.Has(d) {
		return false
	}
	return true
}

// startProbes probes the pods that need it: on a tick all of them, on an Endpoints change only those
// never probed yet, so a failing pod is probed once per tick and not in a busy loop.
func (w *watcher) startProbes(ctx context.Context, tick bool) {
	if w.usingClusterIP() {
		if w.clusterIPDest == "" && !w.clusterInflight && w.all.Len() > 0 {
			w.probeClusterIP(ctx)
		}
		return
	}
	for d := range w.all {
		if w.inflight.Has(d) || !w.needsProbe(d) {
			continue
		}
		if _, probed := w.outcomes[d]; probed && !tick {
			continue
		}
		w.inflight.Insert(d)
		w.fallbackArmed = true
		go w.probeOne(ctx, d, false, w.timeout)
	}
}

func (w *watcher) probeClusterIP(ctx context.Context) {
	dest, err := w.clusterIP(w.rev, w.info.PortName())
	if err != nil {
		// Retried every tick while needed, hence not louder.
		w.logger.Debugw("No private service address to probe", zap.Error(err))
		return
	}
	w.clusterInflight = true
	go w.probeOne(ctx, dest, true, w.timeout)
}

// probeOne runs in its own goroutine: one probe of dest with the given timeout.
func (w *watcher) probeOne(ctx context.Context, dest string, clusterIP bool, timeout time.Duration) {
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := w.opts.Clock.AfterFunc(timeout, func() { cancel(errProbeTimeout) })
	defer timer.Stop()
	host := ""
	if w.opts.PassthroughLB {
		host = w.rev.Name + "-private." + w.rev.Namespace
	}
	outcome, err := probe(pctx, w.opts.Transport, dest, host)
	r := probeResult{dest: dest, clusterIP: clusterIP, outcome: outcome, err: err,
		timedOut: outcome == probeFailed && errors.Is(context.Cause(pctx), errProbeTimeout)}
	select {
	case w.results <- r:
	case <-ctx.Done():
	}
}

func (w *watcher) handleResult(r probeResult) {
	if r.timedOut && w.timeout < w.opts.MaxProbeTimeout {
		w.timeout = min(2*w.timeout, w.opts.MaxProbeTimeout)
		w.logger.Infof("Probe of %s timed out; probe timeout raised to %v", r.dest, w.timeout)
	}
	if r.clusterIP {
		w.clusterInflight = false
		if r.outcome != probePassed {
			w.logger.Debugw("ClusterIP probe failed", zap.String("dest", r.dest), zap.Error(r.err))
			return
		}
		if w.all.Len() == 0 {
			return
		}
		if w.podsAddressable && w.meshMode() == MeshAuto {
			w.logger.Infof("Pods are not directly addressable; routing through the private service %s", r.dest)
		}
		w.podsAddressable = false
		w.clusterIPDest = r.dest
		w.publish()
		return
	}
	w.inflight.Delete(r.dest)
	if !w.all.Has(r.dest) {
		return // the pod left while we probed it
	}
	w.outcomes[r.dest] = r.outcome
	if r.outcome != probePassed {
		w.logger.Debugw("Probe failed", zap.String("dest", r.dest), zap.Error(r.err))
		return
	}
	w.passed.Insert(r.dest)
	// Route to the pod now, not at the end of a round.
	w.publish()
}

// maybeFallback probes the private ClusterIP in auto mode once every pod has answered without passing,
// and no answer ruled out a mesh (upstream's podsAddressable detection).
func (w *watcher) maybeFallback(ctx context.Context) {
	if w.meshMode() != MeshAuto || w.opts.PassthroughLB || !w.podsAddressable || w.clusterInflight || !w.fallbackArmed {
		return
	}
	all := w.all
	if all.Len() == 0 || w.passed.Len() > 0 || w.inflight.Len() > 0 {
		return
	}
	for d := range all {
		o, ok := w.outcomes[d]
		if !ok || o == probeNotMesh || o == probePassed {
			return
		}
	}
	// Once per round of pod probes, not in a loop while the ClusterIP fails too.
	w.fallbackArmed = false
	w.probeClusterIP(ctx)
}

// publish sends the current backends if they changed.
func (w *watcher) publish() {
	if w.usingClusterIP() {
		if w.clusterIPDest == "" {
			w.send(throttler.Backends{})
			return
		}
		// As upstream: the ClusterIP plus the ready pods behind it, which size the capacity.
		w.send(throttler.Backends{ClusterIPDest: w.clusterIPDest, Dests: sorted(w.cur.ready)})
		return
	}
	w.send(throttler.Backends{Dests: sorted(w.healthy())})
}

func (w *watcher) send(b throttler.Backends) {
	if w.sent != nil && w.sent.ClusterIPDest == b.ClusterIPDest && slices.Equal(w.sent.Dests, b.Dests) {
		return
	}
	w.sent = &b
	w.logger.Debugw("Backends updated", zap.Strings("dests", b.Dests), zap.String("clusterIP", b.ClusterIPDest))
	w.sink.UpdateBackends(w.rev, b)
}

// updateTicker keeps a re-probe ticker only while something is still to be probed.
func (w *watcher) updateTicker() {
	need := false
	if w.usingClusterIP() {
		need = w.clusterIPDest == "" && w.all.Len() > 0
	} else {
		for d := range w.all {
			if w.needsProbe(d) {
				need = true
				break
			}
		}
		// In auto mode a failed ClusterIP fallback is retried on the tick too.
	}
	if !need {
		w.stopTicker()
		w.coldSince = time.Time{}
		return
	}
	period := w.probePeriod()
	if w.ticker != nil && w.tickerPeriod != period {
		w.stopTicker()
	}
	if w.ticker == nil {
		w.ticker = w.opts.Clock.NewTicker(period)
		w.tickerPeriod = period
	}
}

// probePeriod is the fast cold period while no pod passed a probe, within the cold window, and
// ProbeFrequency otherwise.
func (w *watcher) probePeriod() time.Duration {
	if w.passed.Len() > 0 || w.clusterIPDest != "" || w.opts.ColdProbeFrequency >= w.opts.ProbeFrequency {
		w.coldSince = time.Time{}
		return w.opts.ProbeFrequency
	}
	now := w.opts.Clock.Now()
	if w.coldSince.IsZero() {
		w.coldSince = now
	}
	if now.Sub(w.coldSince) < w.opts.ColdProbeWindow {
		return w.opts.ColdProbeFrequency
	}
	return w.opts.ProbeFrequency
}

func (w *watcher) stopTicker() {
	if w.ticker != nil {
		w.ticker.Stop()
		w.ticker = nil
	}
}

func sorted(s sets.Set[string]) []string {
	if s.Len() == 0 {
		return nil
	}
	return sets.List(s)
}
