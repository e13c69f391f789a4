package multiscaler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktest "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/wire"
)

var key = types.NamespacedName{Namespace: "ns", Name: "rev"}

// fakeSource is the metric client and pod counter; every metric read is
// reported on reads so that tests can wait for a decision.
type fakeSource struct {
	mu      sync.Mutex
	stable  float64
	panic   float64
	err     error
	ready   int
	podErr  error
	lastRPS bool
	reads   chan time.Time
}

func newSource() *fakeSource { return &fakeSource{reads: make(chan time.Time, 100)} }

func (f *fakeSource) set(stable, panic float64, ready int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stable, f.panic, f.ready = stable, panic, ready
}

func (f *fakeSource) read(now time.Time, rps bool) (float64, float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastRPS = rps
	f.reads <- now
	return f.stable, f.panic, f.err
}

func (f *fakeSource) StableAndPanicConcurrency(_ types.NamespacedName, now time.Time) (float64, float64, error) {
	return f.read(now, false)
}

func (f *fakeSource) StableAndPanicRPS(_ types.NamespacedName, now time.Time) (float64, float64, error) {
	return f.read(now, true)
}

func (f *fakeSource) ReadyPods(types.NamespacedName) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.podErr
}

var spec = decider.Spec{MaxScaleUpRate: 1000, MaxScaleDownRate: 2, ScalingMetric: decider.MetricConcurrency,
	TargetValue: 10, TotalValue: 10, TargetBurstCapacity: 20, PanicThreshold: 2,
	StableWindow: time.Minute, InitialScale: 1, Reachable: true}

type harness struct {
	t      *testing.T
	clk    *clocktest.FakeClock
	src    *fakeSource
	ms     *MultiScaler
	inform chan types.NamespacedName
}

func start(t *testing.T) *harness { return startWith(t, nil) }

// startWith is start with extra Options.
func startWith(t *testing.T, mod func(*Options)) *harness {
	h := &harness{t: t, clk: clocktest.NewFakeClock(time.Unix(1_700_000_000, 0)), src: newSource(),
		inform: make(chan types.NamespacedName, 100)}
	opts := Options{Clock: h.clk, Metrics: h.src, Pods: h.src, Logger: zaptest.NewLogger(t).Sugar()}
	if mod != nil {
		mod(&opts)
	}
	h.ms = New(opts)
	// Set after construction, as the KPA reconciler does.
	h.ms.Watch(func(k types.NamespacedName) { h.inform <- k })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.ms.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	})
	return h
}

// step advances the fake clock once the scheduler is waiting on its timer.
func (h *harness) step(d time.Duration) {
	h.t.Helper()
	testutil.StepWhenWaiting(h.t, h.clk, d)
}

func (h *harness) expectRead() time.Time {
	h.t.Helper()
	select {
	case now := <-h.src.reads:
		return now
	case <-time.After(5 * time.Second):
		h.t.Fatal("no decision")
	}
	return time.Time{}
}

func (h *harness) expectNoRead() {
	h.t.Helper()
	select {
	case now := <-h.src.reads:
		h.t.Fatalf("unexpected decision at %v", now)
	case <-time.After(50 * time.Millisecond):
	}
}

func (h *harness) expectInform(want bool) {
	h.t.Helper()
	// A decision's inform happens right after its metric read.
	select {
	case k := <-h.inform:
		if !want {
			h.t.Fatalf("unexpected Inform(%v)", k)
		}
		if k != key {
			h.t.Fatalf("Inform(%v), want %v", k, key)
		}
	case <-time.After(map[bool]time.Duration{true: 5 * time.Second, false: 50 * time.Millisecond}[want]):
		if want {
			h.t.Fatal("no Inform")
		}
	}
}

func (h *harness) status() Status {
	h.t.Helper()
	s, _, err := h.ms.Get(key)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func TestInitialStatus(t *testing.T) {
	tests := []struct {
		name  string
		tbc   float64
		init  int32
		ready int
		want  Status
	}{
		{"tbc 0", 0, 1, 0, Status{DesiredScale: -1, ExcessBurstCapacity: 0}},
		{"tbc -1", -1, 1, 0, Status{DesiredScale: -1, ExcessBurstCapacity: -1}},
		{"tbc above initial capacity", 20, 1, 0, Status{DesiredScale: -1, ExcessBurstCapacity: -10}},
		{"tbc within initial capacity", 20, 3, 0, Status{DesiredScale: -1, ExcessBurstCapacity: 10}},
		{"restart with pods starts in panic", 20, 1, 4, Status{DesiredScale: -1, ExcessBurstCapacity: -10, InPanic: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource()
			src.ready = tc.ready
			ms := New(Options{Clock: clocktest.NewFakeClock(time.Unix(1_700_000_000, 0)), Metrics: src, Pods: src})
			s := spec
			s.TargetBurstCapacity, s.InitialScale = tc.tbc, tc.init
			if got := ms.Create(key, s, Labels{}); got != tc.want {
				t.Errorf("Create = %+v, want %+v", got, tc.want)
			}
			// A second Create keeps the existing decider.
			s.TargetBurstCapacity = 0
			if got := ms.Create(key, s, Labels{}); got != tc.want {
				t.Errorf("second Create = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTickAndInform(t *testing.T) {
	h := start(t)
	t0 := h.clk.Now()
	h.src.set(25, 25, 1)
	h.ms.Create(key, spec, Labels{})

	h.step(time.Second) // not due yet
	h.expectNoRead()
	h.step(time.Second)
	if got := h.expectRead(); !got.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("decided at %v, want creation + 2s", got)
	}
	h.expectInform(true) // −1 → 3
	if got := h.status(); got.DesiredScale != 3 || got.ExcessBurstCapacity != -35 {
		t.Errorf("status = %+v", got)
	}

	h.step(2 * time.Second) // same decision: no inform
	h.expectRead()
	h.expectInform(false)

	// EBC changes sign (−35 → 5) while the desired scale stays: inform.
	h.src.set(25, 5, 3)
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true)
	if got := h.status(); got.ExcessBurstCapacity != 5 || got.DesiredScale != 3 {
		t.Errorf("status = %+v", got)
	}
}

func TestMetricChoiceAndErrors(t *testing.T) {
	h := start(t)
	s := spec
	s.ScalingMetric = decider.MetricRPS
	h.src.set(25, 25, 1)
	h.ms.Create(key, s, Labels{})
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true)
	h.src.mu.Lock()
	rps := h.src.lastRPS
	h.src.err = collector.ErrNoData
	h.src.mu.Unlock()
	if !rps {
		t.Error("rps spec read concurrency")
	}
	// No data: invalid, the status stays.
	h.src.set(1000, 1000, 1)
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(false)
	if got := h.status(); got.DesiredScale != 3 {
		t.Errorf("status changed without data: %+v", got)
	}
	// A failing pod count skips the tick before the metrics are read.
	h.src.mu.Lock()
	h.src.err, h.src.podErr = nil, errors.New("lister down")
	h.src.mu.Unlock()
	h.step(2 * time.Second)
	h.expectNoRead()
	// NotFound means zero pods.
	h.src.mu.Lock()
	h.src.podErr = apierrors.NewNotFound(schema.GroupResource{Resource: "endpoints"}, "x")
	h.src.mu.Unlock()
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true)
	if got := h.status(); got.DesiredScale != 100 {
		t.Errorf("status = %+v, want desired 100", got)
	}
}

func TestPoke(t *testing.T) {
	h := start(t)
	h.src.set(0, 0, 0)
	s := spec
	s.TargetBurstCapacity = -1
	h.ms.Create(key, s, Labels{})

	// Desired is −1 before the first decision (a restarted autoscaler):
	// a poke decides at once, where upstream waits for the next tick.
	at := h.clk.Now()
	h.ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	if got := h.expectRead(); !got.Equal(at) {
		t.Errorf("poke at -1 decided at %v, want %v", got, at)
	}
	h.expectInform(true) // −1 → 0 (the source shows no requests)

	// Scaled to zero and a stat without requests: no poke.
	h.ms.Poke(key, wire.Stat{RequestCount: 3})
	h.expectNoRead()
	// Scaled to zero and requests: decide now, without the clock moving.
	h.src.set(5, 5, 0)
	before := h.clk.Now()
	h.ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	if got := h.expectRead(); !got.Equal(before) {
		t.Errorf("poke decided at %v, want %v", got, before)
	}
	h.expectInform(true) // 0 → 1
	// Desired is 1 now: pokes do nothing.
	h.ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	h.expectNoRead()
	// Unknown revisions are ignored.
	h.ms.Poke(types.NamespacedName{Namespace: "x", Name: "y"}, wire.Stat{AverageConcurrentRequests: 1})
	h.expectNoRead()
}

// TestColdStartTimes: the accepted poke of a revision at zero and the
// decision that takes it above zero reach the cold-start recorder, with the
// scheduler's clock; deleting the decider drops the open record.
func TestColdStartTimes(t *testing.T) {
	rec := coldstart.NewRecorder(coldstart.RecorderOptions{})
	h := startWith(t, func(o *Options) { o.ColdStarts = rec })
	h.src.set(0, 0, 0)
	s := spec
	s.TargetBurstCapacity = -1
	h.ms.Create(key, s, Labels{})
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true) // −1 → 0: not a cold start
	if rec.Open() != 0 {
		t.Fatal("a record opened without a poke")
	}

	h.src.set(5, 5, 0)
	poked := h.clk.Now()
	h.ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	h.expectRead()
	h.expectInform(true) // 0 → 1
	if rec.Open() != 1 {
		t.Fatalf("open records = %d, want 1", rec.Open())
	}
	// The reconciler's patch completes it (here by hand).
	written := poked.Add(3 * time.Millisecond)
	rec.ScaleWritten(key, written, 1)
	got := rec.Ring().Snapshot()
	if len(got) != 1 || !got[0].PokeReceived.Equal(poked) || !got[0].Decided.Equal(poked) || got[0].DesiredScale != 1 {
		t.Fatalf("records = %+v, want poke and decision at %v", got, poked)
	}

	// Back at zero, poked again, then deleted before any patch.
	h.src.set(0, 0, 1)
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true) // 1 → 0
	h.ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	h.expectRead()
	if rec.Open() != 1 {
		t.Fatalf("open records = %d after the second poke, want 1", rec.Open())
	}
	h.ms.Delete(key)
	if rec.Open() != 0 {
		t.Fatal("deleting the decider left its record open")
	}

	// A new revision's first decision above 0 (from −1) is no cold start;
	// a tick, not a poke, taking it from 0 above 0 opens a record without
	// a poke.
	h.src.set(5, 5, 0)
	h.ms.Create(key, s, Labels{})
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true) // −1 → 1
	if rec.Open() != 0 {
		t.Fatal("a new revision's first decision opened a record")
	}
	h.src.set(0, 0, 1)
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true) // 1 → 0
	h.src.set(5, 5, 0)
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true) // 0 → 1 on the tick
	rec.ScaleWritten(key, h.clk.Now(), 1)
	got = rec.Ring().Snapshot()
	if last := got[len(got)-1]; len(got) != 2 || !last.PokeReceived.IsZero() || !last.Decided.Equal(h.clk.Now()) {
		t.Fatalf("records = %+v, want a second one without a poke", got)
	}

	// A poke before a revision's first decision (a restarted autoscaler
	// holding it at zero) decides at once and is a cold start.
	h.ms.Delete(key)
	h.src.set(5, 5, 0)
	h.ms.Create(key, s, Labels{})
	poked = h.clk.Now()
	h.ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	h.expectRead()
	h.expectInform(true) // −1 → 1 on the poke
	rec.ScaleWritten(key, poked.Add(time.Millisecond), 1)
	got = rec.Ring().Snapshot()
	if last := got[len(got)-1]; len(got) != 3 || !last.PokeReceived.Equal(poked) || !last.Decided.Equal(poked) {
		t.Fatalf("records = %+v, want a third one poked and decided at %v", got, poked)
	}
}

// Poke must return at once even while the scheduler is busy (here: stuck in
// Inform), and pokes of one revision coalesce.
func TestPokeNeverBlocks(t *testing.T) {
	clk := clocktest.NewFakeClock(time.Unix(1_700_000_000, 0))
	src := newSource()
	src.reads = make(chan time.Time, 1000)
	release := make(chan struct{})
	informed := make(chan struct{}, 10)
	ms := New(Options{Clock: clk, Metrics: src, Pods: src, Inform: func(types.NamespacedName) {
		informed <- struct{}{}
		<-release
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ms.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s := spec
	s.TargetBurstCapacity = 0
	ms.Create(key, s, Labels{})
	testutil.StepWhenWaiting(t, clk, 2*time.Second)
	<-informed // the scheduler is now blocked in Inform; desired is 0
	start := time.Now()
	for range 10000 {
		ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("10000 pokes took %v", el)
	}
	ms.pokeMu.Lock()
	n := len(ms.pokes)
	ms.pokeMu.Unlock()
	if n != 1 {
		t.Errorf("%d pending pokes, want 1 (coalesced)", n)
	}
	close(release)
}

func TestDeleteAndUpdate(t *testing.T) {
	h := start(t)
	h.src.set(25, 25, 1)
	h.ms.Create(key, spec, Labels{})
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true)

	s := spec
	s.TargetValue = 5
	if _, err := h.ms.Update(key, s); err != nil {
		t.Fatal(err)
	}
	if got := h.status(); got.DesiredScale != 3 {
		t.Errorf("Update reset the status: %+v", got)
	}
	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true)
	if got := h.status(); got.DesiredScale != 5 {
		t.Errorf("status after update = %+v, want desired 5", got)
	}

	h.ms.Delete(key)
	if _, _, err := h.ms.Get(key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v", err)
	}
	if _, err := h.ms.Update(key, s); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update after Delete = %v", err)
	}
	h.step(2 * time.Second)
	h.expectNoRead()
	if h.ms.Len() != 0 {
		t.Errorf("Len = %d", h.ms.Len())
	}
}

// Revisions keep their own phase: each is decided 2 s after its creation,
// and a clock jump skips missed ticks instead of replaying them.
func TestPhasesAndJumps(t *testing.T) {
	h := start(t)
	h.src.set(0, 0, 0)
	k2 := types.NamespacedName{Namespace: "ns", Name: "rev2"}
	h.ms.Create(key, spec, Labels{})
	h.step(time.Second)
	h.ms.Create(k2, spec, Labels{})
	h.step(time.Second) // key due
	h.expectRead()
	h.expectNoRead()
	h.step(time.Second) // k2 due
	h.expectRead()
	h.expectNoRead()
	h.step(20 * time.Second) // both due once
	h.expectRead()
	h.expectRead()
	h.expectNoRead()
}
