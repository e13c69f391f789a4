// Package multiscaler runs the deciders of all revisions: every revision is
// decided every TickInterval, and immediately when a stat arrives for a
// revision scaled to zero (a poke), so that scale-from-zero does not wait for
// the next tick. When a decision changes the desired scale, or flips the sign
// of the excess burst capacity, the Inform callback tells the KPA reconciler.
//
// One scheduler goroutine (Run) serves every revision from a min-heap of due
// times. Decisions are in-memory arithmetic of a few hundred nanoseconds, so
// one goroutine decides 10,000 revisions well within one tick, with one
// timer in total instead of a goroutine and a ticker per revision, and pokes
// coalesce into a bounded list instead of blocking the sender.
package multiscaler

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// DefaultTickInterval is how often each revision is decided.
const DefaultTickInterval = 2 * time.Second

// ErrNotFound is returned for a revision without a decider.
var ErrNotFound = errors.New("decider not found")

// MetricClient provides the observed window averages (the collector).
type MetricClient interface {
	StableAndPanicConcurrency(key types.NamespacedName, now time.Time) (float64, float64, error)
	StableAndPanicRPS(key types.NamespacedName, now time.Time) (float64, float64, error)
}

// PodCounter counts the ready pods of a revision. A NotFound error
// (apierrors.IsNotFound) counts as 0 pods; any other error skips the tick.
type PodCounter interface {
	ReadyPods(key types.NamespacedName) (int, error)
}

// PodCounterFunc adapts a function to PodCounter.
type PodCounterFunc func(types.NamespacedName) (int, error)

// ReadyPods calls f.
func (f PodCounterFunc) ReadyPods(key types.NamespacedName) (int, error) { return f(key) }

// Status is a revision's latest recommendation.
type Status struct {
	// DesiredScale is −1 until the first valid decision.
	DesiredScale        int32
	ExcessBurstCapacity int32
	InPanic             bool
}

// ColdStarts is told about the autoscaler's side of scales from zero
// (coldstart.Recorder). Calls must not block.
type ColdStarts interface {
	// PokeReceived: a poke for key arrived at at while its desired scale was 0.
	PokeReceived(key types.NamespacedName, at time.Time)
	// Decided: the desired scale of key went from 0 to desired > 0 (not
	// from −1: a new revision's first decision is no cold start).
	Decided(key types.NamespacedName, at time.Time, desired int32)
	// Forget: key's decider was deleted.
	Forget(key types.NamespacedName)
}

// Options configures a MultiScaler.
type Options struct {
	Clock   clock.WithTicker
	Metrics MetricClient
	Pods    PodCounter
	// Inform is called from the scheduler goroutine after a decision changed
	// a revision's status; it must not block (enqueue and return).
	Inform func(types.NamespacedName)
	Logger *zap.SugaredLogger
	// TickInterval overrides DefaultTickInterval.
	TickInterval time.Duration
	// ColdStarts, if set, times scales from zero.
	ColdStarts ColdStarts
}

// MultiScaler holds the deciders of all revisions.
type MultiScaler struct {
	clock   clock.WithTicker
	metrics MetricClient
	pods    PodCounter
	// inform is set by Options.Inform or Watch (the KPA reconciler is built
	// after the multiscaler it reads from).
	inform   atomic.Pointer[func(types.NamespacedName)]
	logger   *zap.SugaredLogger
	interval time.Duration
	cold     ColdStarts // nil: not timed

	// mu guards runners, due and runner.next/index.
	mu      sync.RWMutex
	runners map[types.NamespacedName]*runner
	due     dueHeap

	pokeMu sync.Mutex
	// pokes lists runners poked since the scheduler last looked; a runner
	// is in it at most once (runner.poked), so it is bounded by the number
	// of revisions.
	pokes []*runner
	// wake nudges the scheduler; buffered so that senders never block.
	wake chan struct{}
}

type runner struct {
	key    types.NamespacedName
	labels Labels

	// mu guards dec and status; held by the scheduler while deciding and by
	// Update/Get.
	mu     sync.Mutex
	dec    *decider.Decider
	status Status
	// Observed values of the last valid decision, for the metrics.
	stable, panic, target float64
	decided               bool

	// desired mirrors status.DesiredScale for the lock-free poke check.
	desired atomic.Int32
	poked   atomic.Bool
	// unknownPoke marks a poke accepted before the first decision, so that
	// decision counts as a cold start.
	unknownPoke atomic.Bool

	// next (unix nanoseconds) and index belong to the heap, under
	// MultiScaler.mu; index is −1 once deleted.
	next  int64
	index int
}

// New returns a MultiScaler; call Run to start deciding.
func New(opts Options) *MultiScaler {
	m := &MultiScaler{
		clock:    opts.Clock,
		metrics:  opts.Metrics,
		pods:     opts.Pods,
		logger:   opts.Logger,
		interval: opts.TickInterval,
		cold:     opts.ColdStarts,
		runners:  make(map[types.NamespacedName]*runner),
		wake:     make(chan struct{}, 1),
	}
	if m.clock == nil {
		m.clock = clock.RealClock{}
	}
	if m.logger == nil {
		m.logger = zap.NewNop().Sugar()
	}
	if m.interval <= 0 {
		m.interval = DefaultTickInterval
	}
	if opts.Inform != nil {
		m.Watch(opts.Inform)
	}
	return m
}

// Watch sets the callback told about changed decisions, replacing any
// earlier one. It is called from the scheduler goroutine and must not block.
func (m *MultiScaler) Watch(fn func(types.NamespacedName)) {
	m.inform.Store(&fn)
}

// initialEBC is the excess burst capacity before the first decision: the
// special values as they are, otherwise what the initial scale would give.
func initialEBC(s decider.Spec) int32 {
	switch tbc := s.TargetBurstCapacity; tbc {
	case -1, 0:
		return int32(tbc)
	default:
		// If TBC exceeds what the initial scale can take, the activator
		// stays in the path from the start.
		return int32(float64(s.InitialScale)*s.TotalValue - tbc)
	}
}

// Labels name the service and configuration of a revision, for the metrics.
type Labels struct {
	Service, Configuration string
}

// Create starts deciding for key, unless a decider exists already; it returns
// the current status either way.
func (m *MultiScaler) Create(key types.NamespacedName, spec decider.Spec, labels Labels) Status {
	m.mu.RLock()
	r, ok := m.runners[key]
	m.mu.RUnlock()
	if ok {
		return r.get()
	}
	// Before the first decision the pod count may not exist yet (the SKS is
	// created after the decider): then start from 0. Counted outside the
	// lock: the counter is someone else's code.
	ready, err := m.pods.ReadyPods(key)
	if err != nil {
		ready = 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.runners[key]; ok {
		return r.get() // created concurrently
	}
	now := m.clock.Now()
	r = &runner{
		key:    key,
		labels: labels,
		dec:    decider.New(spec, ready, now),
		status: Status{DesiredScale: -1, ExcessBurstCapacity: initialEBC(spec), InPanic: ready > 1},
		next:   now.Add(m.interval).UnixNano(),
	}
	r.desired.Store(-1)
	m.runners[key] = r
	heap.Push(&m.due, r)
	m.nudge()
	return r.status
}

// Update changes the spec of key's decider, keeping its state and status.
func (m *MultiScaler) Update(key types.NamespacedName, spec decider.Spec) (Status, error) {
	m.mu.RLock()
	r, ok := m.runners[key]
	m.mu.RUnlock()
	if !ok {
		return Status{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dec.Update(spec)
	return r.status, nil
}

// Get returns the status and spec of key's decider.
func (m *MultiScaler) Get(key types.NamespacedName) (Status, decider.Spec, error) {
	m.mu.RLock()
	r, ok := m.runners[key]
	m.mu.RUnlock()
	if !ok {
		return Status{}, decider.Spec{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status, r.dec.Spec(), nil
}

// Delete stops deciding for key.
func (m *MultiScaler) Delete(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.runners[key]; ok {
		delete(m.runners, key)
		heap.Remove(&m.due, r.index)
		r.index = -1
	}
	if m.cold != nil {
		m.cold.Forget(key)
	}
}

// Len returns the number of deciders.
func (m *MultiScaler) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.runners)
}

// Poke asks for an immediate decision for key when it is scaled to zero, or
// not decided yet, and the stat shows requests. Upstream ignores pokes until
// the first decision, so a revision at zero under a just-restarted
// autoscaler waits for the next tick; deciding at once costs one early
// decision. It never blocks: pokes of a revision coalesce until the
// scheduler picks them up.
func (m *MultiScaler) Poke(key types.NamespacedName, stat wire.Stat) {
	if stat.AverageConcurrentRequests == 0 {
		return
	}
	m.mu.RLock()
	r := m.runners[key]
	m.mu.RUnlock()
	if r == nil || r.desired.Load() > 0 || r.poked.Swap(true) {
		return
	}
	if r.desired.Load() < 0 {
		r.unknownPoke.Store(true)
	}
	if m.cold != nil {
		// The stat server's stamp has only seconds; the stat reaches us
		// straight from its queue, so now is its receipt time.
		m.cold.PokeReceived(key, m.clock.Now())
	}
	m.pokeMu.Lock()
	m.pokes = append(m.pokes, r)
	m.pokeMu.Unlock()
	m.nudge()
}

func (m *MultiScaler) nudge() {
	select {
	case m.wake <- struct{}{}:
	default: // a nudge is pending already
	}
}

// Run decides every revision when due and on pokes, until ctx ends. Call it
// once, from the goroutine that owns the MultiScaler.
func (m *MultiScaler) Run(ctx context.Context) error {
	timer := m.clock.NewTimer(m.interval)
	defer timer.Stop()
	var batch []*runner
	for {
		now := m.clock.Now()
		batch = m.collect(now, batch[:0])
		for i, r := range batch {
			m.tick(r, now)
			batch[i] = nil
		}
		timer.Reset(m.untilNext(m.clock.Now()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C():
		case <-m.wake:
		}
	}
}

// collect returns the poked runners and the runners due at now, and
// reschedules the latter on their own phase.
func (m *MultiScaler) collect(now time.Time, batch []*runner) []*runner {
	m.pokeMu.Lock()
	for i, r := range m.pokes {
		r.poked.Store(false)
		batch = append(batch, r)
		m.pokes[i] = nil
	}
	m.pokes = m.pokes[:0]
	m.pokeMu.Unlock()

	m.mu.Lock()
	defer m.mu.Unlock()
	// Drop pokes of revisions deleted meanwhile.
	kept := batch[:0]
	for _, r := range batch {
		if r.index >= 0 {
			kept = append(kept, r)
		}
	}
	batch = kept
	nowNs, step := now.UnixNano(), int64(m.interval)
	for len(m.due) > 0 && m.due[0].next <= nowNs {
		r := m.due[0]
		// Skip ticks missed while the clock jumped, like a ticker does.
		r.next += ((nowNs-r.next)/step + 1) * step
		heap.Fix(&m.due, 0)
		batch = append(batch, r)
	}
	return batch
}

func (m *MultiScaler) untilNext(now time.Time) time.Duration {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.due) == 0 {
		return m.interval
	}
	return max(time.Duration(m.due[0].next-now.UnixNano()), 0)
}

// tick makes one decision for r and informs on a change.
func (m *MultiScaler) tick(r *runner, now time.Time) {
	if changed := m.decide(r, now); changed {
		if fn := m.inform.Load(); fn != nil && *fn != nil {
			(*fn)(r.key)
		}
	}
}

func (m *MultiScaler) decide(r *runner, now time.Time) bool {
	ready, err := m.pods.ReadyPods(r.key)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			m.logger.Errorw("Failed to get the ready pod count", "key", r.key.String(), zap.Error(err))
			return false
		}
		ready = 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	obs := decider.Observation{Ready: ready}
	spec := r.dec.SpecRef()
	if spec.ScalingMetric == decider.MetricRPS {
		obs.Stable, obs.Panic, err = m.metrics.StableAndPanicRPS(r.key, now)
	} else {
		obs.Stable, obs.Panic, err = m.metrics.StableAndPanicConcurrency(r.key, now)
	}
	if err != nil {
		if !errors.Is(err, collector.ErrNoData) {
			m.logger.Errorw("Failed to obtain metrics", "key", r.key.String(), zap.Error(err))
		}
		obs.NoData = true
	}
	d := r.dec.Scale(now, obs)
	if !d.Valid {
		return false
	}
	changed := r.status.DesiredScale != d.DesiredScale ||
		(r.status.ExcessBurstCapacity < 0) != (d.ExcessBurstCapacity < 0)
	fromUnknown := r.unknownPoke.Swap(false) && r.status.DesiredScale < 0
	if m.cold != nil && (r.status.DesiredScale == 0 || fromUnknown) && d.DesiredScale > 0 {
		m.cold.Decided(r.key, now, d.DesiredScale)
	}
	r.status = Status{DesiredScale: d.DesiredScale, ExcessBurstCapacity: d.ExcessBurstCapacity, InPanic: d.InPanic}
	r.stable, r.panic, r.target, r.decided = obs.Stable, obs.Panic, spec.TargetValue, true
	r.desired.Store(d.DesiredScale)
	return changed
}

// get returns the status under the runner's lock.
func (r *runner) get() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// dueHeap orders runners by their next tick.
type dueHeap []*runner

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].next < h[j].next }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *dueHeap) Push(x any) {
	r := x.(*runner)
	r.index = len(*h)
	*h = append(*h, r)
}
func (h *dueHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return r
}
