package throttler

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// pod tracks one destination as seen by this activator.
type pod struct {
	dest     string
	inflight int
	// present is false once the pod left the backends; it is kept only
	// until its in-flight requests finish, so a pod that flaps back keeps
	// its accounting.
	present bool
	// viaClusterIP: dest is the revision's private service, not a pod.
	viaClusterIP bool
	// suspectUntil: the pod refused a connection; no new requests before.
	suspectUntil time.Time

	// CC=0 ramp (slow start): the cap grows by one per successful
	// completion, and is at least initial × 2^(elapsed/RampInterval) since
	// rampStart. rampDone once it reached MaxPodConcurrency: unlimited.
	rampCap   int
	rampStart time.Time
	rampDone  bool
}

// outcome of one call of fn on a pod, for release.
type outcome uint8

const (
	outcomeOK outcome = iota
	outcomeRetryable
	outcomeFailed
	outcomeUnused
)

// waiter is one queued request. It is granted a pod (or an error) under the
// revision lock, so a freed slot goes to exactly one waiter in FIFO order
// and nobody re-competes for it.
type waiter struct {
	ch         chan struct{} // buffered 1; signalled once per use
	prev, next *waiter
	queued     bool
	pod        *pod
	err        error
}

// timer is the part of clock.Timer revision wake-ups need.
type timer interface{ Stop() bool }

// revThrottler is the state of one revision. One mutex guards it all: the
// critical sections are short (no I/O, at most a scan of assigned pods), and
// a single lock makes capacity, pod choice and queue hand-off atomic, which
// is what removes upstream's two-level race and its re-enqueue loop.
type revThrottler struct {
	id     types.NamespacedName
	t      *Throttler
	logger *zap.SugaredLogger

	mu         sync.Mutex
	configured bool // UpsertRevision seen
	deleted    bool // removed from the Throttler's map; final
	cc, depth  int
	cfgDepth   int // QueueDepth as configured (0 = default)

	pods      map[string]*pod // present and draining pods by dest
	sorted    []*pod          // present pods, sorted by dest
	assigned  []*pod          // this activator's subset of sorted
	clusterIP *pod
	backends  int // ready pods behind the ClusterIP
	numAct    int
	actIdx    int
	capacity  int
	rr        int
	// routable mirrors capacity > 0 for the lock-free Routable check.
	routable atomic.Bool

	active     int
	head, tail *waiter
	queued     int

	timer   timer
	timerAt time.Time
	timerID uint64
}

func newRevThrottler(t *Throttler, id types.NamespacedName) *revThrottler {
	return &revThrottler{
		id:     id,
		t:      t,
		logger: t.logger.With(zap.String("knative.dev/key", id.String())),
		pods:   map[string]*pod{},
		actIdx: -1,
		depth:  t.opts.QueueDepth,
	}
}

// acquire returns a pod with a reserved slot, waiting in the queue if
// needed. front puts the request at the head of the queue (a retry of a
// request that was already admitted) and exempts it from the depth bound;
// such requests are bounded by the in-flight count.
func (rt *revThrottler) acquire(ctx context.Context, front bool) (*pod, error) {
	rt.mu.Lock()
	if rt.deleted || !rt.configured {
		rt.mu.Unlock()
		return nil, ErrRevisionDeleted
	}
	if rt.head == nil {
		if p := rt.pickLocked(); p != nil {
			rt.reserveLocked(p)
			rt.mu.Unlock()
			return p, nil
		}
	}
	if err := ctx.Err(); err != nil {
		rt.mu.Unlock()
		return nil, err
	}
	if !front {
		if rt.queued >= rt.depth || rt.queued >= rt.t.fairShare(rt.queued == 0) {
			rt.mu.Unlock()
			return nil, ErrQueueFull
		}
		if rt.t.queued.Add(1) > int64(rt.t.opts.TotalQueueDepth) {
			rt.t.queued.Add(-1)
			rt.mu.Unlock()
			return nil, ErrQueueFull
		}
	} else {
		rt.t.queued.Add(1)
	}
	w := rt.t.getWaiter()
	rt.enqueueLocked(w, front)
	if rt.timer == nil {
		rt.scheduleLocked()
	}
	rt.mu.Unlock()

	select {
	case <-w.ch:
		p, err := w.pod, w.err
		rt.t.putWaiter(w)
		return p, err
	case <-ctx.Done():
	}
	rt.mu.Lock()
	if w.queued {
		rt.unlinkLocked(w)
		rt.mu.Unlock()
		rt.t.putWaiter(w)
		return nil, ctx.Err()
	}
	rt.mu.Unlock()
	// Granted (or failed) concurrently with the cancellation: the signal is
	// already buffered. Hand a granted slot back.
	<-w.ch
	p := w.pod
	rt.t.putWaiter(w)
	if p != nil {
		rt.release(p, outcomeUnused)
	}
	return nil, ctx.Err()
}

func (rt *revThrottler) reserveLocked(p *pod) {
	p.inflight++
	rt.active++
}

// release frees p's slot, learns from the outcome and serves waiters.
func (rt *revThrottler) release(p *pod, o outcome) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	p.inflight--
	rt.active--
	switch o {
	case outcomeOK:
		if rt.cc == 0 && !p.rampDone {
			p.rampCap++
			if p.rampCap >= rt.t.opts.MaxPodConcurrency {
				p.rampDone = true
			}
		}
	case outcomeRetryable:
		now := rt.t.clk.Now()
		if !p.viaClusterIP {
			// Behind a ClusterIP the next connection likely lands on
			// another pod: retry at once rather than stall the revision.
			p.suspectUntil = now.Add(rt.t.opts.SuspectFor)
		}
		if rt.cc == 0 {
			// The pod refused a connection: restart its ramp from half.
			c := p.rampCap
			if p.rampDone {
				c = rt.t.opts.MaxPodConcurrency
			}
			p.rampCap, p.rampDone, p.rampStart = max(1, c/2), false, now
		}
	}
	if !p.present && p.inflight == 0 && rt.pods[p.dest] == p {
		delete(rt.pods, p.dest)
	}
	rt.dispatchLocked()
}

// dispatchLocked grants free slots to waiters in FIFO order.
func (rt *revThrottler) dispatchLocked() {
	for rt.head != nil {
		p := rt.pickLocked()
		if p == nil {
			rt.scheduleLocked()
			return
		}
		w := rt.head
		rt.unlinkLocked(w)
		rt.reserveLocked(p)
		w.pod = p
		w.ch <- struct{}{}
	}
}

// failAllLocked ends every waiter with err.
func (rt *revThrottler) failAllLocked(err error) {
	for rt.head != nil {
		w := rt.head
		rt.unlinkLocked(w)
		w.err = err
		w.ch <- struct{}{}
	}
}

func (rt *revThrottler) enqueueLocked(w *waiter, front bool) {
	w.queued = true
	rt.queued++
	if rt.queued == 1 {
		rt.t.queuing.Add(1)
	}
	if rt.head == nil {
		rt.head, rt.tail = w, w
		return
	}
	if front {
		w.next = rt.head
		rt.head.prev = w
		rt.head = w
		return
	}
	w.prev = rt.tail
	rt.tail.next = w
	rt.tail = w
}

func (rt *revThrottler) unlinkLocked(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		rt.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		rt.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	rt.queued--
	if rt.queued == 0 {
		rt.t.queuing.Add(-1)
	}
	rt.t.queued.Add(-1)
}

// limitLocked is p's in-flight cap at now; now is fetched lazily.
//
// At CC=0 upstream releases the whole buffer onto the first ready pod at
// once (#9888): a pod that just passed its probe gets hundreds of requests
// and answers 502s. Its real capacity is unknown, so it is learnt the way
// TCP slow start does: the cap starts at InitialPodConcurrency and grows by
// one per successful completion, which doubles it per round of
// completions. Completions alone would pin a pod at its initial cap while
// long-lived requests (websockets, streams) hold it, so the cap is also at
// least InitialPodConcurrency doubled every RampInterval since the pod
// appeared (about 7 s from 10 to 1000 by default). From MaxPodConcurrency
// on the pod is unlimited, as upstream. A refusal halves the cap and
// restarts the clock. Each new pod brings its own initial cap, so the
// release also scales with the pods that become ready.
func (rt *revThrottler) limitLocked(p *pod, now *time.Time) int {
	if rt.cc > 0 {
		return rt.cc
	}
	if p.rampDone {
		return unlimited
	}
	opts := &rt.t.opts
	if now.IsZero() {
		*now = rt.t.clk.Now()
	}
	steps := min(max(int(now.Sub(p.rampStart)/opts.RampInterval), 0), 30)
	lim := max(p.rampCap, opts.InitialPodConcurrency<<steps)
	if lim >= opts.MaxPodConcurrency {
		p.rampDone = true
		return unlimited
	}
	return lim
}

func (rt *revThrottler) availableLocked(p *pod, now *time.Time) bool {
	if !p.suspectUntil.IsZero() {
		if now.IsZero() {
			*now = rt.t.clk.Now()
		}
		if now.Before(p.suspectUntil) {
			return false
		}
		p.suspectUntil = time.Time{}
	}
	return p.inflight < rt.limitLocked(p, now)
}

// pickLocked chooses a pod with a free slot, or nil. Policies follow
// upstream: first available in dest order for CC 1-3 (packs the lowest
// pods so the others stay idle for scale-down and no request waits on a
// busy pod while another is free), round robin skipping full pods above 3,
// and power of two choices by in-flight for CC 0.
func (rt *revThrottler) pickLocked() *pod {
	var now time.Time
	if p := rt.clusterIP; p != nil {
		if !rt.availableClusterIPLocked(p, &now) {
			return nil
		}
		return p
	}
	pods := rt.assigned
	n := len(pods)
	if n == 0 {
		return nil
	}
	switch {
	case rt.cc == 0:
		return rt.pickP2CLocked(pods, &now)
	case rt.cc <= 3:
		for _, p := range pods {
			if rt.availableLocked(p, &now) {
				return p
			}
		}
		return nil
	default:
		if rt.rr >= n {
			rt.rr = 0
		}
		for i := range n {
			j := (rt.rr + i) % n
			if p := pods[j]; rt.availableLocked(p, &now) {
				rt.rr = j + 1
				return p
			}
		}
		return nil
	}
}

func (rt *revThrottler) availableClusterIPLocked(p *pod, now *time.Time) bool {
	if !p.suspectUntil.IsZero() {
		if now.IsZero() {
			*now = rt.t.clk.Now()
		}
		if now.Before(p.suspectUntil) {
			return false
		}
		p.suspectUntil = time.Time{}
	}
	return p.inflight < rt.capacity
}

func (rt *revThrottler) pickP2CLocked(pods []*pod, now *time.Time) *pod {
	n := len(pods)
	if n == 1 {
		if rt.availableLocked(pods[0], now) {
			return pods[0]
		}
		return nil
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := pods[i], pods[j]
	okA, okB := rt.availableLocked(a, now), rt.availableLocked(b, now)
	switch {
	case okA && okB:
		if b.inflight < a.inflight || (b.inflight == a.inflight && rand.IntN(2) == 0) {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	// Both sampled pods are full or suspect: take the least loaded of the
	// rest rather than queueing while a pod is free.
	var best *pod
	for _, p := range pods {
		if rt.availableLocked(p, now) && (best == nil || p.inflight < best.inflight) {
			best = p
		}
	}
	return best
}

// scheduleLocked arms a wake-up for the earliest time-based capacity
// change (a suspect pod recovering, a CC=0 ramp step) while requests wait.
func (rt *revThrottler) scheduleLocked() {
	if rt.head == nil || rt.deleted {
		return
	}
	now := rt.t.clk.Now()
	var at time.Time
	consider := func(t time.Time) {
		if t.After(now) && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if p := rt.clusterIP; p != nil {
		consider(p.suspectUntil)
	} else {
		iv := rt.t.opts.RampInterval
		for _, p := range rt.assigned {
			consider(p.suspectUntil)
			if rt.cc == 0 && !p.rampDone {
				steps := max(now.Sub(p.rampStart)/iv, 0)
				consider(p.rampStart.Add((steps + 1) * iv))
			}
		}
	}
	if at.IsZero() {
		return
	}
	if rt.timer != nil {
		if !rt.timerAt.After(at) {
			return
		}
		rt.timer.Stop()
	}
	rt.timerID++
	id := rt.timerID
	rt.timerAt = at
	rt.timer = rt.t.afterFunc(at.Sub(now), func() { rt.onTimer(id) })
}

func (rt *revThrottler) onTimer(id uint64) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.timerID != id || rt.timer == nil {
		return
	}
	rt.timer = nil
	rt.dispatchLocked()
}

func (rt *revThrottler) stopTimerLocked() {
	if rt.timer != nil {
		rt.timer.Stop()
		rt.timer = nil
	}
}

// upsertLocked applies cfg; it reports whether anything changed.
func (rt *revThrottler) upsertLocked(cfg RevisionConfig) bool {
	cc := max(cfg.ContainerConcurrency, 0)
	if rt.configured && rt.cc == cc && rt.cfgDepth == cfg.QueueDepth {
		return false
	}
	rt.configured = true
	rt.cfgDepth = cfg.QueueDepth
	rt.depth = cfg.QueueDepth
	if rt.depth <= 0 {
		rt.depth = rt.t.opts.QueueDepth
	}
	if rt.cc != cc {
		rt.cc = cc
		rt.rr = 0
		rt.reassignLocked()
	}
	return true
}

// setBackendsLocked replaces the destinations, reusing trackers by dest.
func (rt *revThrottler) setBackendsLocked(b Backends) {
	dests := slices.Clone(b.Dests)
	slices.Sort(dests)
	dests = slices.Compact(dests)
	if len(dests) > 0 && dests[0] == "" {
		dests = dests[1:]
	}
	rt.backends = len(dests)
	if b.ClusterIPDest != "" {
		if rt.clusterIP == nil || rt.clusterIP.dest != b.ClusterIPDest {
			rt.clusterIP = &pod{dest: b.ClusterIPDest, present: true, viaClusterIP: true}
		}
		dests = nil
	} else {
		rt.clusterIP = nil
	}
	now := rt.t.clk.Now()
	for _, p := range rt.sorted {
		p.present = false
	}
	sorted := make([]*pod, 0, len(dests))
	for _, d := range dests {
		p, ok := rt.pods[d]
		if !ok {
			p = &pod{dest: d, rampCap: rt.t.opts.InitialPodConcurrency, rampStart: now}
			rt.pods[d] = p
		}
		p.present = true
		sorted = append(sorted, p)
	}
	rt.sorted = sorted
	for d, p := range rt.pods {
		if !p.present && p.inflight == 0 {
			delete(rt.pods, d)
		}
	}
	rt.reassignLocked()
}

// reassignLocked recomputes this activator's subset and capacity.
func (rt *revThrottler) reassignLocked() {
	if rt.cc > 0 {
		rt.assigned = assign(rt.assigned[:0], rt.sorted, rt.actIdx, rt.numAct)
	} else {
		// CC=0 has no per-pod limit to split, so every activator uses all
		// pods (as upstream).
		rt.assigned = append(rt.assigned[:0], rt.sorted...)
	}
	clear(rt.assigned[len(rt.assigned):cap(rt.assigned)])
	old := rt.capacity
	rt.capacity = capacity(rt.cc, len(rt.assigned), rt.backends, rt.numAct, rt.clusterIP != nil)
	rt.routable.Store(rt.capacity > 0)
	if old != rt.capacity {
		rt.logger.Debugw("Capacity changed", "capacity", rt.capacity, "pods", len(rt.assigned),
			"backends", rt.backends, "index", rt.actIdx, "activators", rt.numAct, "clusterIP", rt.clusterIP != nil)
	}
}

// afterFunc runs f once after d. f runs on its own goroutine, never under
// the clock's lock (the fake clock calls AfterFunc callbacks while holding
// it, and f takes the revision lock, which is held while reading the
// clock).
func (t *Throttler) afterFunc(d time.Duration, f func()) timer {
	if c, ok := t.clk.(clock.WithDelayedExecution); ok {
		return c.AfterFunc(d, func() { go f() })
	}
	tm := t.clk.NewTimer(d)
	stop := make(chan struct{})
	go func() {
		select {
		case <-tm.C():
			f()
		case <-stop:
		}
	}()
	return &chanTimer{tm: tm, stop: stop}
}

type chanTimer struct {
	tm   clock.Timer
	stop chan struct{}
	once sync.Once
}

func (c *chanTimer) Stop() bool {
	r := c.tm.Stop()
	c.once.Do(func() { close(c.stop) })
	return r
}
