package throttler

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Throttler holds the per-revision state of one activator. Revisions exist
// from UpsertRevision until DeleteRevision; UpdateBackends and
// UpdateActivators may arrive before UpsertRevision and are kept.
type Throttler struct {
	podIP  string
	opts   Options
	clk    clock.WithTicker
	logger *zap.SugaredLogger

	waiters sync.Pool
	// queued counts waiters of all revisions, for TotalQueueDepth.
	queued atomic.Int64
	// queuing counts revisions with at least one waiter, for fairShare.
	queuing atomic.Int64

	// revs maps types.NamespacedName to *revThrottler. A sync.Map keeps the
	// per-request lookup free of shared writes; mu serialises creation and
	// removal.
	revs sync.Map
	mu   sync.Mutex
}

// New returns a Throttler for the activator with the given pod IP.
func New(podIP string, opts Options, clk clock.WithTicker, logger *zap.SugaredLogger) *Throttler {
	if logger == nil {
		logger = zap.NewNop().Sugar()
	}
	return &Throttler{
		podIP:   podIP,
		opts:    opts.withDefaults(),
		clk:     clk,
		logger:  logger,
		waiters: sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }},
	}
}

// fairShare is how many waiters one revision may hold of TotalQueueDepth
// when n revisions have waiters (n+1 if the caller's would be a new queue):
// TotalQueueDepth/(n+1). The +1 keeps a share free for a revision that is
// not queuing yet, so saturated revisions can never fill the activator-wide
// bound between them and a cold request to another revision still queues.
// A queue over its share (others joined after it filled) keeps its waiters
// and takes new ones only once it is back under. Alone, a revision gets
// half the total bound: DefaultQueueDepth with the defaults.
func (t *Throttler) fairShare(joining bool) int {
	n := t.queuing.Load()
	if joining {
		n++
	}
	return max(1, int(int64(t.opts.TotalQueueDepth)/(n+1)))
}

func (t *Throttler) getWaiter() *waiter { return t.waiters.Get().(*waiter) }

func (t *Throttler) putWaiter(w *waiter) {
	w.pod, w.err = nil, nil
	t.waiters.Put(w)
}

func (t *Throttler) get(rev types.NamespacedName) *revThrottler {
	if v, ok := t.revs.Load(rev); ok {
		return v.(*revThrottler)
	}
	return nil
}

// lockRev returns rev's state, created if missing, with its lock held. A
// state removed from the map is marked deleted under both locks, so the
// loop never updates an orphan.
func (t *Throttler) lockRev(rev types.NamespacedName) *revThrottler {
	for {
		rt := t.get(rev)
		if rt == nil {
			t.mu.Lock()
			if rt = t.get(rev); rt == nil {
				rt = newRevThrottler(t, rev)
				t.revs.Store(rev, rt)
			}
			t.mu.Unlock()
		}
		rt.mu.Lock()
		if !rt.deleted {
			return rt
		}
		rt.mu.Unlock()
	}
}

// removeLocked drops rt from the map; both t.mu and rt.mu are held.
func (t *Throttler) removeLocked(rt *revThrottler, err error) {
	t.revs.CompareAndDelete(rt.id, rt)
	rt.deleted = true
	rt.routable.Store(false)
	rt.stopTimerLocked()
	rt.failAllLocked(err)
}

// Try waits for capacity, then calls fn with a destination "ip:port".
//
// It returns ErrQueueFull at once when the revision's queue is full,
// ErrRevisionDeleted for a revision that is unknown (never upserted) or was
// deleted (also to requests waiting when it is deleted), and ctx.Err() when
// ctx ends while waiting. Otherwise it returns what fn returns. If fn
// returns an error wrapping ErrRetryable (the request never reached the
// pod), the pod is avoided for Options.SuspectFor and fn is called again on
// another pod, at most Options.MaxRetries times; the last error is returned
// when retries run out. Callers should call UpsertRevision with the
// revision's current config before Try; it is cheap when nothing changed.
func (t *Throttler) Try(ctx context.Context, rev types.NamespacedName, fn func(dest string) error) error {
	rt := t.get(rev)
	if rt == nil {
		return ErrRevisionDeleted
	}
	front := false
	for attempt := 0; ; attempt++ {
		p, err := rt.acquire(ctx, front)
		if err != nil {
			return err
		}
		err = rt.call(p, fn)
		switch {
		case err == nil:
			rt.release(p, outcomeOK)
			return nil
		case !errors.Is(err, ErrRetryable):
			rt.release(p, outcomeFailed)
			return err
		}
		rt.release(p, outcomeRetryable)
		if attempt >= t.opts.MaxRetries || ctx.Err() != nil {
			return err
		}
		front = true
	}
}

// call runs fn and releases p's slot if fn panics (httputil.ReverseProxy
// panics with http.ErrAbortHandler), so a slot is never lost.
func (rt *revThrottler) call(p *pod, fn func(string) error) (err error) {
	done := false
	defer func() {
		if !done {
			rt.release(p, outcomeFailed)
		}
	}()
	err = fn(p.dest)
	done = true
	return err
}

// UpsertRevision creates or reconfigures a revision. A deleted revision is
// revived. Changing CC changes per-pod limits and the LB policy at once;
// lowering QueueDepth never evicts requests already waiting.
func (t *Throttler) UpsertRevision(rev types.NamespacedName, cfg RevisionConfig) {
	rt := t.lockRev(rev)
	defer rt.mu.Unlock()
	if rt.upsertLocked(cfg) {
		rt.logger.Debugw("Revision configured", "containerConcurrency", rt.cc, "queueDepth", rt.depth)
		rt.dispatchLocked()
	}
}

// UpdateBackends sets the healthy destinations of a revision. Trackers are
// reused by dest; new pods serve waiters at once; removed pods finish their
// in-flight requests and get no new ones.
func (t *Throttler) UpdateBackends(rev types.NamespacedName, b Backends) {
	if len(b.Dests) == 0 && b.ClusterIPDest == "" {
		// Don't create state for a revision that has nothing to say.
		if t.get(rev) == nil {
			return
		}
	}
	rt := t.lockRev(rev)
	rt.setBackendsLocked(b)
	rt.dispatchLocked()
	orphan := rt.orphanLocked()
	rt.mu.Unlock()
	if orphan {
		t.dropOrphan(rt)
	}
}

// orphanLocked reports whether rt holds nothing worth keeping: never
// configured (or deleted since) and without backends or activators.
func (rt *revThrottler) orphanLocked() bool {
	return !rt.configured && len(rt.sorted) == 0 && rt.clusterIP == nil && rt.numAct == 0
}

// dropOrphan removes rt if it is still an orphan, so that endpoint events
// outliving a revision (or for one never configured) cannot leak its state.
func (t *Throttler) dropOrphan(rt *revThrottler) {
	t.mu.Lock()
	rt.mu.Lock()
	if !rt.deleted && rt.orphanLocked() {
		t.removeLocked(rt, ErrRevisionDeleted)
	}
	rt.mu.Unlock()
	t.mu.Unlock()
}

// UpdateActivators sets the activator IPs of the revision's public
// Endpoints. This activator's index is the position of its pod IP among the
// sorted IPs; when absent it takes all pods.
func (t *Throttler) UpdateActivators(rev types.NamespacedName, activatorIPs []string) {
	if len(activatorIPs) == 0 && t.get(rev) == nil {
		return
	}
	idx, n := activatorIndex(activatorIPs, t.podIP)
	rt := t.lockRev(rev)
	if rt.actIdx == idx && rt.numAct == n {
		rt.mu.Unlock()
		return
	}
	rt.logger.Infof("This activator's index is %d/%d, was %d/%d", idx, n, rt.actIdx, rt.numAct)
	rt.actIdx, rt.numAct = idx, n
	rt.reassignLocked()
	rt.dispatchLocked()
	orphan := rt.orphanLocked()
	rt.mu.Unlock()
	if orphan {
		t.dropOrphan(rt)
	}
}

// DeleteRevision forgets rev. Its waiting requests end at once with
// ErrRevisionDeleted and so do later Try calls, until UpsertRevision.
// In-flight requests finish normally.
func (t *Throttler) DeleteRevision(rev types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.get(rev)
	if rt == nil {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	t.removeLocked(rt, ErrRevisionDeleted)
	rt.logger.Debug("Revision deleted")
}

// FailWaiting ends the requests waiting for rev with err, now; later
// requests queue as before. It is for a revision that cannot start: its
// buffered requests learn it at once rather than at their timeout.
func (t *Throttler) FailWaiting(rev types.NamespacedName, err error) {
	rt := t.get(rev)
	if rt == nil {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.failAllLocked(err)
}

// Len returns the number of revisions with state in the throttler.
func (t *Throttler) Len() int {
	n := 0
	t.revs.Range(func(any, any) bool { n++; return true })
	return n
}

// Stats returns the number of queued and in-flight requests of rev.
func (t *Throttler) Stats(rev types.NamespacedName) (queued, active int) {
	rt := t.get(rev)
	if rt == nil {
		return 0, 0
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.queued, rt.active
}

// Routable reports whether rev has a pod this activator may send to (its
// capacity is above 0), busy or not. It takes no lock: the activator asks
// it for every request to tell a cold start from a warm one.
func (t *Throttler) Routable(rev types.NamespacedName) bool {
	rt := t.get(rev)
	return rt != nil && rt.routable.Load()
}

// Capacity returns how many requests of rev this activator lets in flight
// at once (math.MaxInt32 when unlimited), or 0 for an unknown revision.
func (t *Throttler) Capacity(rev types.NamespacedName) int {
	rt := t.get(rev)
	if rt == nil {
		return 0
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.capacity
}
