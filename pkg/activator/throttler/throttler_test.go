package throttler

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
)

var rev = types.NamespacedName{Namespace: "ns", Name: "rev"}

func newTestThrottler(t *testing.T, opts Options) (*Throttler, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	return New("10.0.0.1", opts, clk, zaptest.NewLogger(t).Sugar()), clk
}

func dests(n int) []string {
	d := make([]string, n)
	for i := range d {
		d[i] = fmt.Sprintf("10.1.0.%d:8012", i+1)
	}
	return d
}

// call is one request whose fn blocks until the test releases it.
type call struct {
	dest    chan string // each destination fn was called with
	release chan error  // what fn returns
	done    chan error  // what Try returned
	cancel  context.CancelFunc
}

func start(th *Throttler, r types.NamespacedName) *call {
	ctx, cancel := context.WithCancel(context.Background())
	c := &call{dest: make(chan string, 16), release: make(chan error, 16), done: make(chan error, 1), cancel: cancel}
	go func() {
		c.done <- th.Try(ctx, r, func(d string) error {
			c.dest <- d
			return <-c.release
		})
	}()
	return c
}

const waitLimit = 10 * time.Second

// waitFor yields until cond holds; it never sleeps.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}

func waitQueued(t *testing.T, th *Throttler, r types.NamespacedName, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d queued", n), func() bool { q, _ := th.Stats(r); return q == n })
}

func (c *call) entered(t *testing.T) string {
	t.Helper()
	select {
	case d := <-c.dest:
		return d
	case <-time.After(waitLimit):
		t.Fatal("request did not reach a pod")
		return ""
	}
}

func (c *call) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(waitLimit):
		t.Fatal("Try did not return")
		return nil
	}
}

func (c *call) notEntered(t *testing.T) {
	t.Helper()
	select {
	case d := <-c.dest:
		t.Fatalf("request reached %s, want it queued", d)
	default:
	}
}

func TestUnknownRevision(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	called := false
	err := th.Try(context.Background(), rev, func(string) error { called = true; return nil })
	if !errors.Is(err, ErrRevisionDeleted) || called {
		t.Fatalf("Try = %v (called %v), want ErrRevisionDeleted", err, called)
	}
	// Backends alone do not make a revision routable.
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	if err := th.Try(context.Background(), rev, func(string) error { return nil }); !errors.Is(err, ErrRevisionDeleted) {
		t.Fatalf("Try before UpsertRevision = %v", err)
	}
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	if err := th.Try(context.Background(), rev, func(string) error { return nil }); err != nil {
		t.Fatalf("Try after UpsertRevision = %v", err)
	}
}

func TestCapacityFromUpdates(t *testing.T) {
	tests := []struct {
		name       string
		cc         int
		backends   Backends
		activators []string
		wantCap    int
		wantPods   []string
	}{{
		name: "no backends", cc: 1, wantCap: 0,
	}, {
		name: "cc2 three pods", cc: 2, backends: Backends{Dests: dests(3)}, wantCap: 6, wantPods: dests(3),
	}, {
		name: "cc0 three pods", cc: 0, backends: Backends{Dests: dests(3)}, wantCap: unlimited, wantPods: dests(3),
	}, {
		name: "self second of two activators", cc: 1, backends: Backends{Dests: dests(5)},
		activators: []string{"10.0.0.1", "10.0.0.0"}, wantCap: 2, wantPods: dests(5)[2:4],
	}, {
		name: "self first of two activators takes remnant", cc: 1, backends: Backends{Dests: dests(5)},
		activators: []string{"10.0.0.1", "10.0.0.2"}, wantCap: 3, wantPods: []string{dests(5)[0], dests(5)[1], dests(5)[4]},
	}, {
		name: "self absent takes all", cc: 1, backends: Backends{Dests: dests(5)},
		activators: []string{"10.0.0.7", "10.0.0.8"}, wantCap: 5, wantPods: dests(5),
	}, {
		name: "cc0 ignores subsetting", cc: 0, backends: Backends{Dests: dests(4)},
		activators: []string{"10.0.0.1", "10.0.0.2"}, wantCap: unlimited, wantPods: dests(4),
	}, {
		name: "clusterIP", cc: 10, backends: Backends{Dests: dests(5), ClusterIPDest: "10.96.0.1:80"},
		activators: []string{"10.0.0.1", "10.0.0.2"}, wantCap: 25,
	}, {
		name: "clusterIP cc0", cc: 0, backends: Backends{ClusterIPDest: "10.96.0.1:80"}, wantCap: unlimited,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th, _ := newTestThrottler(t, Options{})
			th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: tc.cc})
			th.UpdateActivators(rev, tc.activators)
			th.UpdateBackends(rev, tc.backends)
			if got := th.Capacity(rev); got != tc.wantCap {
				t.Errorf("Capacity = %d, want %d", got, tc.wantCap)
			}
			rt := th.get(rev)
			var got []string
			for _, p := range rt.assigned {
				got = append(got, p.dest)
			}
			if !slices.Equal(got, tc.wantPods) {
				t.Errorf("assigned = %v, want %v", got, tc.wantPods)
			}
		})
	}
}

// Order of updates must not matter: activators before backends and after.
func TestActivatorsAfterBackends(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 3})
	th.UpdateBackends(rev, Backends{Dests: dests(4)})
	if got := th.Capacity(rev); got != 12 {
		t.Fatalf("Capacity = %d, want 12", got)
	}
	th.UpdateActivators(rev, []string{"10.0.0.1", "10.0.0.2"})
	if got := th.Capacity(rev); got != 6 {
		t.Fatalf("Capacity after activators = %d, want 6", got)
	}
	th.UpdateActivators(rev, nil)
	if got := th.Capacity(rev); got != 12 {
		t.Fatalf("Capacity after activators left = %d, want 12", got)
	}
}

func TestLBPolicies(t *testing.T) {
	tests := []struct {
		name string
		cc   int
		n    int // requests held concurrently
		want []string
	}{
		// First available, in dest order: fill the lowest pods first.
		{name: "cc1", cc: 1, n: 3, want: []string{"a:1", "b:1", "c:1"}},
		{name: "cc2", cc: 2, n: 5, want: []string{"a:1", "a:1", "b:1", "b:1", "c:1"}},
		{name: "cc3", cc: 3, n: 4, want: []string{"a:1", "a:1", "a:1", "b:1"}},
		// Round robin above 3.
		{name: "cc4", cc: 4, n: 7, want: []string{"a:1", "b:1", "c:1", "a:1", "b:1", "c:1", "a:1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th, _ := newTestThrottler(t, Options{})
			th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: tc.cc})
			th.UpdateBackends(rev, Backends{Dests: []string{"c:1", "a:1", "b:1"}})
			var got []string
			var calls []*call
			for range tc.n {
				c := start(th, rev)
				got = append(got, c.entered(t))
				calls = append(calls, c)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("dests = %v, want %v", got, tc.want)
			}
			for _, c := range calls {
				c.release <- nil
				if err := c.result(t); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// Round robin skips full pods.
func TestRoundRobinSkipsFull(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 4})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1", "b:1"}})
	var held []*call
	for range 5 { // a b a b a
		c := start(th, rev)
		c.entered(t)
		held = append(held, c)
	}
	for range 3 { // b b b (a is full after the 4th a)
		c := start(th, rev)
		if d := c.entered(t); d != "a:1" && d != "b:1" {
			t.Fatalf("dest %s", d)
		}
		held = append(held, c)
	}
	// All 8 slots are taken: the next one waits.
	c := start(th, rev)
	waitQueued(t, th, rev, 1)
	c.notEntered(t)
	held[0].release <- nil // frees a slot on a
	if d := c.entered(t); d != "a:1" {
		t.Fatalf("waiter went to %s, want the freed a:1", d)
	}
	c.release <- nil
	for _, h := range held[1:] {
		h.release <- nil
	}
}

// Power of two choices prefers the less loaded pod.
func TestP2CPrefersLessLoaded(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 0})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1", "b:1"}})
	count := map[string]int{}
	var held []*call
	for range 8 {
		c := start(th, rev)
		count[c.entered(t)]++
		held = append(held, c)
	}
	// With two pods both are always sampled: load stays within one.
	if d := count["a:1"] - count["b:1"]; d < -1 || d > 1 {
		t.Fatalf("unbalanced: %v", count)
	}
	for _, h := range held {
		h.release <- nil
		if err := h.result(t); err != nil {
			t.Fatal(err)
		}
	}
}

// upstream's TestActivatorOverload: CC=1, 100 concurrent requests over 10
// pods; all served, and no request waits while a pod is free (#14199).
func TestFairnessCC1(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(10)})

	var mu sync.Mutex
	inPod := map[string]int{}
	busy := 0
	entered := make(chan string, 100)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- th.Try(context.Background(), rev, func(d string) error {
				mu.Lock()
				inPod[d]++
				busy++
				if inPod[d] > 1 {
					t.Errorf("pod %s has %d requests at CC=1", d, inPod[d])
				}
				mu.Unlock()
				entered <- d
				<-gate
				mu.Lock()
				inPod[d]--
				busy--
				mu.Unlock()
				return nil
			})
		}()
	}
	// All 10 pods fill before anything waits; the other 90 queue.
	seen := map[string]bool{}
	for range 10 {
		seen[<-entered] = true
	}
	if len(seen) != 10 {
		t.Fatalf("first 10 requests used %d pods", len(seen))
	}
	waitQueued(t, th, rev, 90)
	// Release one at a time: each freed pod takes the next waiter at once, so
	// 10 stay busy while anything waits.
	for i := range 90 {
		gate <- struct{}{}
		<-entered
		q, a := th.Stats(rev)
		if q != 90-i-1 || a != 10 {
			t.Fatalf("step %d: queued %d active %d, want %d and 10", i, q, a, 90-i-1)
		}
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if q, a := th.Stats(rev); q != 0 || a != 0 {
		t.Fatalf("Stats = %d, %d after all done", q, a)
	}
}

func TestQueueFull(t *testing.T) {
	tests := []struct {
		name       string
		optDepth   int
		revDepth   int
		wantQueued int
	}{
		{name: "options depth", optDepth: 3, wantQueued: 3},
		{name: "revision depth overrides", optDepth: 3, revDepth: 1, wantQueued: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th, _ := newTestThrottler(t, Options{QueueDepth: tc.optDepth})
			th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1, QueueDepth: tc.revDepth})
			th.UpdateBackends(rev, Backends{Dests: dests(1)})
			first := start(th, rev)
			first.entered(t)
			var waiting []*call
			for i := range tc.wantQueued {
				waiting = append(waiting, start(th, rev))
				waitQueued(t, th, rev, i+1)
			}
			called := false
			err := th.Try(context.Background(), rev, func(string) error { called = true; return nil })
			if !errors.Is(err, ErrQueueFull) || called {
				t.Fatalf("Try on a full queue = %v (called %v), want ErrQueueFull", err, called)
			}
			first.release <- nil
			for _, w := range waiting {
				w.entered(t)
				w.release <- nil
				if err := w.result(t); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// Under overload rejected requests cost nothing: no allocation, flat heap.
func TestOverloadMemoryFlat(t *testing.T) {
	th, _ := newTestThrottler(t, Options{QueueDepth: 100})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	first := start(th, rev)
	first.entered(t)
	var waiting []*call
	for range 100 {
		waiting = append(waiting, start(th, rev))
	}
	waitQueued(t, th, rev, 100)

	ctx := context.Background()
	fn := func(string) error { return nil }
	if n := testing.AllocsPerRun(1000, func() {
		if err := th.Try(ctx, rev, fn); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Try = %v", err)
		}
	}); n != 0 {
		t.Errorf("rejected Try allocates %v times", n)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 100_000 {
		if err := th.Try(ctx, rev, fn); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Try = %v", err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 256<<10 {
		t.Errorf("heap grew by %d bytes over 100k rejected requests", grow)
	}
	if q, a := th.Stats(rev); q != 100 || a != 1 {
		t.Errorf("Stats = %d, %d; want 100, 1", q, a)
	}
	first.release <- nil
	for _, w := range waiting {
		w.release <- nil
	}
	for _, w := range waiting {
		if err := w.result(t); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFIFO(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	first := start(th, rev)
	first.entered(t)
	var waiting []*call
	for i := range 20 {
		waiting = append(waiting, start(th, rev))
		waitQueued(t, th, rev, i+1)
	}
	first.release <- nil
	for i, w := range waiting {
		w.entered(t)
		for _, later := range waiting[i+1:] {
			later.notEntered(t)
		}
		w.release <- nil
	}
}

func TestCancelWhileQueued(t *testing.T) {
	th, _ := newTestThrottler(t, Options{QueueDepth: 2})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	first := start(th, rev)
	first.entered(t)
	a := start(th, rev)
	waitQueued(t, th, rev, 1)
	b := start(th, rev)
	waitQueued(t, th, rev, 2)

	a.cancel()
	if err := a.result(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Try = %v", err)
	}
	a.notEntered(t)
	// The cancelled waiter left the queue: there is room again.
	waitQueued(t, th, rev, 1)
	c := start(th, rev)
	waitQueued(t, th, rev, 2)

	// The freed slot goes to b, then c, never to the cancelled a.
	first.release <- nil
	b.entered(t)
	c.notEntered(t)
	b.release <- nil
	c.entered(t)
	c.release <- nil
	for _, x := range []*call{first, b, c} {
		if err := x.result(t); err != nil {
			t.Fatal(err)
		}
	}
	if q, act := th.Stats(rev); q != 0 || act != 0 {
		t.Fatalf("Stats = %d, %d", q, act)
	}
}

// An already cancelled context never queues.
func TestCancelledBeforeQueueing(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := th.Try(ctx, rev, func(string) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Try = %v", err)
	}
	if q, _ := th.Stats(rev); q != 0 {
		t.Fatalf("queued = %d", q)
	}
}

func TestDeleteRevisionReleasesWaiters(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	inflight := start(th, rev)
	inflight.entered(t)
	var waiting []*call
	for i := range 50 {
		waiting = append(waiting, start(th, rev))
		waitQueued(t, th, rev, i+1)
	}
	// Waiters without a pod at all end too.
	other := types.NamespacedName{Namespace: "ns", Name: "cold"}
	th.UpsertRevision(other, RevisionConfig{})
	cold := start(th, other)
	waitQueued(t, th, other, 1)

	th.DeleteRevision(rev)
	th.DeleteRevision(other)
	for _, w := range append(waiting, cold) {
		if err := w.result(t); !errors.Is(err, ErrRevisionDeleted) {
			t.Fatalf("waiter got %v, want ErrRevisionDeleted", err)
		}
		w.notEntered(t)
	}
	// The in-flight request finishes normally.
	inflight.release <- nil
	if err := inflight.result(t); err != nil {
		t.Fatal(err)
	}
	if err := th.Try(context.Background(), rev, func(string) error { return nil }); !errors.Is(err, ErrRevisionDeleted) {
		t.Fatalf("Try after delete = %v", err)
	}
	// Stale backend updates do not resurrect it.
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	if err := th.Try(context.Background(), rev, func(string) error { return nil }); !errors.Is(err, ErrRevisionDeleted) {
		t.Fatalf("Try after stale update = %v", err)
	}
	// Their state goes away with the endpoints.
	th.UpdateBackends(rev, Backends{})
	if th.get(rev) != nil {
		t.Fatal("state of an unconfigured revision kept after its backends left")
	}
	// Upserting again makes it routable.
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	if err := th.Try(context.Background(), rev, func(string) error { return nil }); err != nil {
		t.Fatalf("Try after re-upsert = %v", err)
	}
}

func TestScaleFromZeroReleasesWaiters(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 2})
	var waiting []*call
	for i := range 3 {
		waiting = append(waiting, start(th, rev))
		waitQueued(t, th, rev, i+1)
	}
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	waiting[0].entered(t)
	waiting[1].entered(t)
	waiting[2].notEntered(t)
	// A second pod takes the third at once.
	th.UpdateBackends(rev, Backends{Dests: dests(2)})
	if d := waiting[2].entered(t); d != dests(2)[1] {
		t.Fatalf("third request went to %s", d)
	}
	for _, w := range waiting {
		w.release <- nil
		if err := w.result(t); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBackendUpdatesKeepTrackers(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1"}})
	onA := start(th, rev)
	onA.entered(t)
	// a keeps its in-flight request across the update: the next goes to b.
	th.UpdateBackends(rev, Backends{Dests: []string{"b:1", "a:1"}})
	onB := start(th, rev)
	if d := onB.entered(t); d != "b:1" {
		t.Fatalf("got %s, want b:1", d)
	}
	// a leaves: its request finishes; nothing new goes to a.
	th.UpdateBackends(rev, Backends{Dests: []string{"b:1"}})
	next := start(th, rev)
	waitQueued(t, th, rev, 1)
	onA.release <- nil
	if err := onA.result(t); err != nil {
		t.Fatal(err)
	}
	next.notEntered(t)
	if _, ok := th.get(rev).pods["a:1"]; ok {
		t.Fatal("drained pod a still tracked")
	}
	onB.release <- nil
	if d := next.entered(t); d != "b:1" {
		t.Fatalf("got %s, want b:1", d)
	}
	next.release <- nil
	// a comes back while b is busy with a flapping request: a is fresh.
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1", "b:1"}})
	if err := th.Try(context.Background(), rev, func(d string) error {
		if d != "a:1" {
			t.Errorf("got %s, want a:1", d)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A pod that leaves and comes back while its request is in flight keeps
// its accounting: CC=1 is not oversubscribed.
func TestFlappingPodKeepsInflight(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1"}})
	onA := start(th, rev)
	onA.entered(t)
	th.UpdateBackends(rev, Backends{})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1"}})
	next := start(th, rev)
	waitQueued(t, th, rev, 1)
	next.notEntered(t)
	onA.release <- nil
	next.entered(t)
	next.release <- nil
	if err := next.result(t); err != nil {
		t.Fatal(err)
	}
}

func TestClusterIPRouting(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateActivators(rev, []string{"10.0.0.1", "10.0.0.2"})
	th.UpdateBackends(rev, Backends{Dests: dests(4), ClusterIPDest: "10.96.0.1:80"})
	// Capacity 1×4/2 = 2, all through the ClusterIP.
	a, b := start(th, rev), start(th, rev)
	for _, c := range []*call{a, b} {
		if d := c.entered(t); d != "10.96.0.1:80" {
			t.Fatalf("dest %s", d)
		}
	}
	c := start(th, rev)
	waitQueued(t, th, rev, 1)
	c.notEntered(t)
	// Pods become addressable: the waiter goes to a pod.
	th.UpdateBackends(rev, Backends{Dests: dests(4)})
	if d := c.entered(t); d == "10.96.0.1:80" {
		t.Fatalf("dest %s after switch to pods", d)
	}
	for _, x := range []*call{a, b, c} {
		x.release <- nil
	}
}

// CC=0 cold start: a buffer of requests is not released onto the first
// pod at once (#9888). The per-pod cap starts at InitialPodConcurrency,
// grows by one per completion and doubles per RampInterval.
func TestRampCC0(t *testing.T) {
	th, clk := newTestThrottler(t, Options{InitialPodConcurrency: 2, MaxPodConcurrency: 8, RampInterval: time.Second})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 0})
	var calls []*call
	for i := range 12 {
		calls = append(calls, start(th, rev))
		waitQueued(t, th, rev, i+1)
	}
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	calls[0].entered(t)
	calls[1].entered(t)
	waitQueued(t, th, rev, 10)
	calls[2].notEntered(t)

	// A success raises the cap to 3: the freed slot and one more.
	calls[0].release <- nil
	calls[2].entered(t)
	calls[3].entered(t)
	waitQueued(t, th, rev, 8)
	calls[4].notEntered(t)

	// A failed request gives no credit.
	calls[1].release <- errors.New("500")
	if err := calls[1].result(t); err == nil {
		t.Fatal("want the error back")
	}
	calls[4].entered(t)
	waitQueued(t, th, rev, 7)
	calls[5].notEntered(t)

	// Time alone doubles the floor: 2<<1 = 4 after one interval.
	clk.Step(time.Second)
	calls[5].entered(t)
	waitQueued(t, th, rev, 6)
	// 2<<2 = 8 = MaxPodConcurrency: the pod is unlimited from then on.
	clk.Step(time.Second)
	for _, c := range calls[6:] {
		c.entered(t)
	}
	if !th.get(rev).pods[dests(1)[0]].rampDone {
		t.Fatal("ramp not done at MaxPodConcurrency")
	}
	for _, c := range calls[2:] {
		if c == calls[1] {
			continue
		}
		c.release <- nil
		if err := c.result(t); err != nil {
			t.Fatal(err)
		}
	}
}

// A second pod gets its own ramp: waiters spread instead of flooding.
func TestRampCC0NewPodsAddCapacity(t *testing.T) {
	th, _ := newTestThrottler(t, Options{InitialPodConcurrency: 3})
	th.UpsertRevision(rev, RevisionConfig{})
	var calls []*call
	for i := range 8 {
		calls = append(calls, start(th, rev))
		waitQueued(t, th, rev, i+1)
	}
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	waitQueued(t, th, rev, 5)
	th.UpdateBackends(rev, Backends{Dests: dests(2)})
	waitQueued(t, th, rev, 2)
	count := map[string]int{}
	for _, c := range calls[:6] {
		count[c.entered(t)]++
	}
	if count[dests(2)[0]] != 3 || count[dests(2)[1]] != 3 {
		t.Fatalf("spread %v, want 3 each", count)
	}
	for _, c := range calls {
		c.release <- nil
	}
	for _, c := range calls {
		if err := c.result(t); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRetryOnAnotherPod(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1", "b:1"}})
	var got []string
	err := th.Try(context.Background(), rev, func(d string) error {
		got = append(got, d)
		if d == "a:1" {
			return fmt.Errorf("dial: %w", ErrRetryable)
		}
		return nil
	})
	if err != nil || !slices.Equal(got, []string{"a:1", "b:1"}) {
		t.Fatalf("Try = %v, dests %v", err, got)
	}
	// a is suspect for a while: the next request goes to b although a
	// comes first.
	got = nil
	if err := th.Try(context.Background(), rev, func(d string) error { got = append(got, d); return nil }); err != nil ||
		!slices.Equal(got, []string{"b:1"}) {
		t.Fatalf("Try = %v, dests %v", err, got)
	}
	if q, a := th.Stats(rev); q != 0 || a != 0 {
		t.Fatalf("Stats = %d, %d", q, a)
	}
}

func TestNoRetryOnOtherErrors(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1", "b:1"}})
	boom := errors.New("reset after the request was sent")
	calls := 0
	err := th.Try(context.Background(), rev, func(string) error { calls++; return boom })
	if err != boom || calls != 1 {
		t.Fatalf("Try = %v after %d calls, want boom after 1", err, calls)
	}
	// The pod is not suspect after an ordinary error.
	if err := th.Try(context.Background(), rev, func(d string) error {
		if d != "a:1" {
			return fmt.Errorf("got %s", d)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestRetryBounded(t *testing.T) {
	tests := []struct {
		name       string
		maxRetries int
		wantCalls  int
	}{
		{name: "default", maxRetries: 0, wantCalls: DefaultMaxRetries + 1},
		{name: "one", maxRetries: 1, wantCalls: 2},
		{name: "disabled", maxRetries: -1, wantCalls: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th, _ := newTestThrottler(t, Options{MaxRetries: tc.maxRetries})
			th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
			th.UpdateBackends(rev, Backends{Dests: dests(10)})
			seen := map[string]bool{}
			err := th.Try(context.Background(), rev, func(d string) error {
				if seen[d] {
					t.Errorf("retried on suspect pod %s", d)
				}
				seen[d] = true
				return fmt.Errorf("refused: %w", ErrRetryable)
			})
			if !errors.Is(err, ErrRetryable) || len(seen) != tc.wantCalls {
				t.Fatalf("Try = %v after %d calls, want ErrRetryable after %d", err, len(seen), tc.wantCalls)
			}
		})
	}
}

// With a single pod that refused, the retry waits for the suspect period
// (or another pod) rather than failing.
func TestRetryWaitsForSuspectPod(t *testing.T) {
	for _, name := range []string{"AfterFunc", "NewTimer"} {
		t.Run(name, func(t *testing.T) {
			fake := clocktesting.NewFakeClock(time.Unix(1e9, 0))
			var clk clock.WithTicker = fake
			if name == "NewTimer" {
				// Hide AfterFunc: covers the timer goroutine used with
				// clocks that lack it.
				clk = struct{ clock.WithTicker }{fake}
			}
			th := New("10.0.0.1", Options{SuspectFor: time.Second}, clk, zaptest.NewLogger(t).Sugar())
			th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
			th.UpdateBackends(rev, Backends{Dests: []string{"a:1"}})
			c := start(th, rev)
			c.entered(t)
			c.release <- fmt.Errorf("refused: %w", ErrRetryable)
			waitQueued(t, th, rev, 1)
			c.notEntered(t)
			testutil.StepWhenWaiting(t, fake, time.Second)
			if d := c.entered(t); d != "a:1" {
				t.Fatalf("retry went to %s", d)
			}
			c.release <- nil
			if err := c.result(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A retry goes before requests that queued behind it.
func TestRetryKeepsItsPlace(t *testing.T) {
	th, _ := newTestThrottler(t, Options{QueueDepth: 1})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: []string{"a:1", "b:1"}})
	onA := start(th, rev)
	if d := onA.entered(t); d != "a:1" {
		t.Fatalf("first went to %s", d)
	}
	onB := start(th, rev)
	onB.entered(t)
	later := start(th, rev)
	waitQueued(t, th, rev, 1)
	onA.release <- fmt.Errorf("refused: %w", ErrRetryable)
	// onA's retry queues ahead of later, past the depth bound of 1.
	waitQueued(t, th, rev, 2)
	onB.release <- nil
	if d := onA.entered(t); d != "b:1" {
		t.Fatalf("retry went to %s", d)
	}
	later.notEntered(t)
	onA.release <- nil
	later.entered(t)
	later.release <- nil
	for _, c := range []*call{onA, onB, later} {
		if err := c.result(t); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPanicReleasesSlot(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		_ = th.Try(context.Background(), rev, func(string) error { panic("abort") })
	}()
	if _, a := th.Stats(rev); a != 0 {
		t.Fatalf("active = %d after panic", a)
	}
	if err := th.Try(context.Background(), rev, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestCCChangeAppliesToWaiters(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	a := start(th, rev)
	a.entered(t)
	b := start(th, rev)
	waitQueued(t, th, rev, 1)
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 2})
	b.entered(t)
	if got := th.Capacity(rev); got != 2 {
		t.Fatalf("Capacity = %d", got)
	}
	a.release <- nil
	b.release <- nil
}

// Concurrent requests, cancellations, updates and deletion under -race:
// every slot comes back.
func TestStress(t *testing.T) {
	th, clk := newTestThrottler(t, Options{QueueDepth: 50, InitialPodConcurrency: 2})
	revs := []types.NamespacedName{{Namespace: "ns", Name: "r0"}, {Namespace: "ns", Name: "r1"}, {Namespace: "ns", Name: "r2"}}
	for i, r := range revs {
		th.UpsertRevision(r, RevisionConfig{ContainerConcurrency: i * 2}) // 0, 2, 4
		th.UpdateBackends(r, Backends{Dests: dests(3)})
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				r := revs[(w+i)%len(revs)]
				rctx, cancel := context.WithCancel(ctx)
				if i%7 == 0 {
					cancel()
				}
				_ = th.Try(rctx, r, func(string) error {
					for range 5 {
						runtime.Gosched()
					}
					switch i % 11 {
					case 0:
						return ErrRetryable
					case 1:
						cancel()
					}
					return nil
				})
				cancel()
			}
		}()
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	// Updates and time keep moving until every request is done: retries
	// wait for suspect pods to recover.
	for i := 0; ; i++ {
		select {
		case <-workersDone:
		default:
			r := revs[i%len(revs)]
			th.UpdateBackends(r, Backends{Dests: dests(1 + i%4)})
			th.UpdateActivators(r, []string{"10.0.0.1", "10.0.0.2"}[:i%3%2+1])
			checkNoIdleWhileQueued(t, th.get(r))
			clk.Step(100 * time.Millisecond)
			runtime.Gosched()
			continue
		}
		break
	}
	for _, r := range revs {
		rt := th.get(r)
		rt.mu.Lock()
		if rt.queued != 0 || rt.active != 0 {
			t.Errorf("%v: queued %d active %d", r, rt.queued, rt.active)
		}
		for d, p := range rt.pods {
			if p.inflight != 0 {
				t.Errorf("%v: pod %s inflight %d", r, d, p.inflight)
			}
		}
		rt.mu.Unlock()
	}
	if n := th.queued.Load(); n != 0 {
		t.Errorf("total queued = %d", n)
	}
}

// The bound across revisions holds however many revisions queue.
func TestTotalQueueDepth(t *testing.T) {
	th, _ := newTestThrottler(t, Options{QueueDepth: 10, TotalQueueDepth: 6})
	var revs []types.NamespacedName
	for _, n := range []string{"a", "b", "c", "d"} {
		r := types.NamespacedName{Namespace: "ns", Name: n}
		th.UpsertRevision(r, RevisionConfig{ContainerConcurrency: 1})
		revs = append(revs, r)
	}
	a, b, c, d := revs[0], revs[1], revs[2], revs[3]
	full := func(r types.NamespacedName) {
		t.Helper()
		if err := th.Try(context.Background(), r, func(string) error { return nil }); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Try(%v) = %v, want ErrQueueFull", r, err)
		}
	}
	var w []*call
	fill := func(r types.NamespacedName, n int) {
		t.Helper()
		q, _ := th.Stats(r)
		for i := 0; i < n; i++ {
			w = append(w, start(th, r))
			waitQueued(t, th, r, q+i+1)
		}
	}
	// Each revision's share is total/(queuing revisions + 1): 6/2, 6/3, 6/4.
	fill(a, 3)
	full(a)
	fill(b, 2)
	full(b)
	fill(c, 1)
	full(c)
	// The total bound holds even for a revision within its share (6/5 = 1).
	full(d)
	// A waiter leaving makes room for any revision.
	w[0].cancel()
	if err := w[0].result(t); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	fill(d, 1)
	for _, r := range revs {
		th.DeleteRevision(r)
	}
	for _, c := range w[1:] {
		if err := c.result(t); !errors.Is(err, ErrRevisionDeleted) {
			t.Fatal(err)
		}
	}
	if n, q := th.queued.Load(), th.queuing.Load(); n != 0 || q != 0 {
		t.Fatalf("total queued = %d, revisions queuing = %d after all left", n, q)
	}
}

// TestFairShareColdRevision: two revisions overloaded with more requests than the activator-wide
// bound cannot fill it between them; a cold request to a third revision still waits, and succeeds
// once its pod is up.
func TestFairShareColdRevision(t *testing.T) {
	const total = 30
	th, _ := newTestThrottler(t, Options{QueueDepth: 100, TotalQueueDepth: total})
	hot := []types.NamespacedName{{Namespace: "ns", Name: "hot-1"}, {Namespace: "other", Name: "hot-2"}}
	cold := types.NamespacedName{Namespace: "ns", Name: "cold"}
	for _, r := range append(hot, cold) {
		th.UpsertRevision(r, RevisionConfig{ContainerConcurrency: 1})
	}
	var waiting []*call
	shed := 0
	for i := 0; i < 2*total; i++ { // every hot revision alone is asked for more than the total bound
		for _, r := range hot {
			before, _ := th.Stats(r)
			c := start(th, r)
			var err error
			ended := false
			waitFor(t, "queued or shed", func() bool {
				select {
				case err = <-c.done:
					ended = true
					return true
				default:
				}
				q, _ := th.Stats(r)
				return q > before
			})
			switch {
			case !ended:
				waiting = append(waiting, c)
			case errors.Is(err, ErrQueueFull):
				shed++
			default:
				t.Fatalf("hot Try = %v", err)
			}
		}
	}
	if shed == 0 {
		t.Fatal("the overloaded revisions were never shed")
	}
	c := start(th, cold)
	waitQueued(t, th, cold, 1)
	th.UpdateBackends(cold, Backends{Dests: dests(1)})
	c.entered(t)
	c.release <- nil
	if err := c.result(t); err != nil {
		t.Fatalf("cold request: %v", err)
	}
	for _, r := range hot {
		th.DeleteRevision(r)
	}
	for _, w := range waiting {
		w.result(t)
	}
}

// A refusal through the ClusterIP retries at once: another pod behind the
// service likely answers.
func TestRetryViaClusterIP(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateBackends(rev, Backends{Dests: dests(2), ClusterIPDest: "10.96.0.1:80"})
	calls := 0
	err := th.Try(context.Background(), rev, func(d string) error {
		calls++
		if calls == 1 {
			return fmt.Errorf("refused: %w", ErrRetryable)
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("Try = %v after %d calls", err, calls)
	}
}

// checkNoIdleWhileQueued: with CC>0, nothing waits while an assigned pod
// has a free slot (pods that refused a connection excepted).
func checkNoIdleWhileQueued(t *testing.T, rt *revThrottler) {
	t.Helper()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.cc == 0 || rt.head == nil || rt.clusterIP != nil {
		return
	}
	for _, p := range rt.assigned {
		if p.suspectUntil.IsZero() && p.inflight < rt.cc {
			t.Errorf("%v: %d queued while %s has %d/%d in flight", rt.id, rt.queued, p.dest, p.inflight, rt.cc)
		}
	}
}

// When this activator's share grows (another activator left), waiters are
// served at once from the newly assigned pods.
func TestActivatorChangeWakesWaiters(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	th.UpdateActivators(rev, []string{"10.0.0.1", "10.0.0.2"})
	th.UpdateBackends(rev, Backends{Dests: dests(2)})
	first := start(th, rev)
	if d := first.entered(t); d != dests(2)[0] {
		t.Fatalf("first went to %s, want our share %s", d, dests(2)[0])
	}
	second := start(th, rev)
	waitQueued(t, th, rev, 1)
	second.notEntered(t)
	th.UpdateActivators(rev, []string{"10.0.0.1"})
	if d := second.entered(t); d != dests(2)[1] {
		t.Fatalf("second went to %s", d)
	}
	first.release <- nil
	second.release <- nil
}

func TestRoutable(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	var busy *call
	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"unknown", func() {}, false},
		{"configured without pods", func() { th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1}) }, false},
		{"a pod", func() { th.UpdateBackends(rev, Backends{Dests: dests(1)}) }, true},
		{"busy pod stays routable", func() { busy = start(th, rev); <-busy.dest }, true},
		{"pods gone", func() { th.UpdateBackends(rev, Backends{}) }, false},
		{"cluster IP", func() { th.UpdateBackends(rev, Backends{ClusterIPDest: "10.2.0.1:80"}) }, true},
		{"deleted", func() { th.DeleteRevision(rev) }, false},
	}
	for _, s := range steps {
		s.do()
		if got := th.Routable(rev); got != s.want {
			t.Fatalf("%s: Routable = %v, want %v", s.name, got, s.want)
		}
	}
	busy.release <- nil
	if err := <-busy.done; err != nil {
		t.Fatal(err)
	}
}

// TestNoOrphansFromActivators: endpoint events that outlive a revision (its public Endpoints
// change or go after the Revision is deleted, or arrive for a revision never configured) must not
// leave state behind once they say nothing any more.
func TestNoOrphansFromActivators(t *testing.T) {
	ips := []string{"10.0.0.1", "10.0.0.2"}
	tests := []struct {
		name  string
		steps func(th *Throttler)
	}{
		{name: "never configured", steps: func(th *Throttler) {
			th.UpdateActivators(rev, ips)
			th.UpdateActivators(rev, nil)
		}},
		{name: "public endpoints change after the deletion", steps: func(th *Throttler) {
			th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
			th.UpdateActivators(rev, ips)
			th.DeleteRevision(rev)
			th.UpdateActivators(rev, ips[:1])
			th.UpdateActivators(rev, nil)
		}},
		{name: "backends and activators go, in either order", steps: func(th *Throttler) {
			th.UpdateBackends(rev, Backends{Dests: dests(2)})
			th.UpdateActivators(rev, ips)
			th.UpdateBackends(rev, Backends{})
			th.UpdateActivators(rev, nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th, _ := newTestThrottler(t, Options{})
			tc.steps(th)
			if n := th.Len(); n != 0 {
				t.Fatalf("%d revisions left, want 0", n)
			}
		})
	}
}

func TestFailWaiting(t *testing.T) {
	th, _ := newTestThrottler(t, Options{})
	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
	errCannot := errors.New("cannot start")
	w := []*call{start(th, rev), start(th, rev)}
	waitQueued(t, th, rev, 2)
	th.FailWaiting(rev, errCannot)
	th.FailWaiting(types.NamespacedName{Namespace: "ns", Name: "unknown"}, errCannot) // no state made
	for _, c := range w {
		if err := c.result(t); !errors.Is(err, errCannot) {
			t.Fatalf("waiter: %v, want the given error", err)
		}
	}
	if n := th.Len(); n != 1 {
		t.Fatalf("%d revisions, want 1", n)
	}
	// The revision recovers: new requests queue and get a pod.
	c := start(th, rev)
	waitQueued(t, th, rev, 1)
	th.UpdateBackends(rev, Backends{Dests: dests(1)})
	c.entered(t)
	c.release <- nil
	if err := c.result(t); err != nil {
		t.Fatal(err)
	}
}
