package concurrency

import (
	"context"
	"math"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	netstats "knative.dev/networking/pkg/http/stats"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/wire"
)

type fakeSink struct {
	mu      sync.Mutex
	pokes   []wire.StatMessage
	batches chan []wire.StatMessage
}

func newFakeSink() *fakeSink { return &fakeSink{batches: make(chan []wire.StatMessage, 10)} }

func (f *fakeSink) Poke(m wire.StatMessage) {
	f.mu.Lock()
	f.pokes = append(f.pokes, m)
	f.mu.Unlock()
}
func (f *fakeSink) Report(b []wire.StatMessage) { f.batches <- b }
func (f *fakeSink) pokeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pokes)
}

var (
	t0   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	revA = types.NamespacedName{Namespace: "ns", Name: "a"}
	revB = types.NamespacedName{Namespace: "ns", Name: "b"}
)

func byKey(msgs []wire.StatMessage) map[types.NamespacedName]wire.Stat {
	m := map[types.NamespacedName]wire.Stat{}
	for _, msg := range msgs {
		m[msg.Key] = msg.Stat
	}
	return m
}

func TestPokeOnFirstRequest(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	sink := newFakeSink()
	r := New("activator-1", sink, clk, nil)

	tok := r.Begin(revA, Labels{})
	want := wire.StatMessage{Key: revA, Stat: wire.Stat{PodName: "activator-1", AverageConcurrentRequests: 1, RequestCount: 1}}
	if len(sink.pokes) != 1 || sink.pokes[0] != want {
		t.Fatalf("pokes = %+v, want [%+v]", sink.pokes, want)
	}
	// Further requests of a tracked revision do not poke.
	r.Begin(revA, Labels{}).End()
	tok.End()
	if sink.pokeCount() != 1 {
		t.Fatalf("pokes = %d, want 1", sink.pokeCount())
	}
	r.Begin(revB, Labels{}).End()
	if sink.pokeCount() != 2 || sink.pokes[1].Key != revB {
		t.Fatalf("second revision did not poke: %+v", sink.pokes)
	}
}

func TestPeriodAverages(t *testing.T) {
	type ev struct {
		at    time.Duration // from period start
		begin bool
		idx   int
	}
	tests := []struct {
		name      string
		events    []ev
		wantConc  float64 // first report (with first-period adjustment)
		wantCount float64
	}{{
		name:      "one request for half the period",
		events:    []ev{{0, true, 0}, {500 * time.Millisecond, false, 0}},
		wantConc:  0, // 0.5 - 1 floored
		wantCount: 0,
	}, {
		name:      "three requests for the whole period",
		events:    []ev{{0, true, 0}, {0, true, 1}, {0, true, 2}},
		wantConc:  2,
		wantCount: 2,
	}, {
		name: "staggered",
		// 0-1s: 1 req, 250ms-1s: +1, 500ms-750ms: +1 → area 1+0.75+0.25 = 2.
		events:    []ev{{0, true, 0}, {250 * time.Millisecond, true, 1}, {500 * time.Millisecond, true, 2}, {750 * time.Millisecond, false, 2}},
		wantConc:  1,
		wantCount: 2,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(t0)
			r := New("p", newFakeSink(), clk, nil)
			toks := map[int]Token{}
			for _, e := range tc.events {
				clk.SetTime(t0.Add(e.at))
				if e.begin {
					toks[e.idx] = r.Begin(revA, Labels{})
				} else {
					toks[e.idx].End()
				}
			}
			got := byKey(r.Report(t0.Add(time.Second)))[revA]
			if math.Abs(got.AverageConcurrentRequests-tc.wantConc) > 1e-9 || got.RequestCount != tc.wantCount {
				t.Fatalf("got conc %v count %v, want %v %v", got.AverageConcurrentRequests, got.RequestCount, tc.wantConc, tc.wantCount)
			}
			if got.Timestamp != 0 || got.PodName != "p" {
				t.Fatalf("stat %+v: want no timestamp and pod name p", got)
			}
		})
	}
}

func TestSecondPeriodUnadjustedAndIdleDeletion(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	sink := newFakeSink()
	r := New("p", sink, clk, nil)
	tok := r.Begin(revA, Labels{})
	r.Report(t0.Add(time.Second))
	// Second period: the long request continues, two more arrive and finish.
	clk.SetTime(t0.Add(1500 * time.Millisecond))
	r.Begin(revA, Labels{}).End()
	r.Begin(revA, Labels{}).End()
	got := byKey(r.Report(t0.Add(2 * time.Second)))[revA]
	if got.AverageConcurrentRequests != 1 || got.RequestCount != 2 {
		t.Fatalf("second period = %+v, want conc 1 count 2", got)
	}
	// A revision with a request in flight is never forgotten.
	r.Report(t0.Add(3 * time.Second))
	if r.Tracked() != 1 {
		t.Fatal("revision with in-flight request was dropped")
	}
	clk.SetTime(t0.Add(3 * time.Second))
	tok.End()
	// Period 3-4 s is idle: reported at zero once, then forgotten.
	msgs := r.Report(t0.Add(4 * time.Second))
	if len(msgs) != 1 || msgs[0].Stat.AverageConcurrentRequests != 0 || msgs[0].Stat.RequestCount != 0 {
		t.Fatalf("idle period = %+v", msgs)
	}
	if r.Tracked() != 0 {
		t.Fatal("idle revision still tracked")
	}
	if msgs := r.Report(t0.Add(5 * time.Second)); len(msgs) != 0 {
		t.Fatalf("forgotten revision still reported: %+v", msgs)
	}
	clk.SetTime(t0.Add(5 * time.Second))
	r.Begin(revA, Labels{}).End()
	if sink.pokeCount() != 2 {
		t.Fatalf("pokes = %d, want a second poke after the idle period", sink.pokeCount())
	}
}

func TestRunReportsEverySecond(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	sink := newFakeSink()
	reg := prometheus.NewRegistry()
	r := New("p", sink, clk, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	r.Begin(revA, Labels{Service: "svc", Configuration: "cfg"})
	r.Begin(revA, Labels{})
	testutil.StepWhenWaiting(t, clk, time.Second)
	b := <-sink.batches
	if len(b) != 1 || b[0].Stat.AverageConcurrentRequests != 1 || b[0].Stat.RequestCount != 1 {
		t.Fatalf("batch = %+v, want conc 2-1, count 2-1", b)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "kn_revision_request_concurrency" || len(mfs[0].Metric) != 1 {
		t.Fatalf("gathered %v %v", mfs, err)
	}
	m := mfs[0].Metric[0]
	labels := map[string]string{}
	for _, l := range m.Label {
		labels[l.GetName()] = l.GetValue()
	}
	if m.GetGauge().GetValue() != 1 || labels["kn_service_name"] != "svc" || labels["kn_revision_name"] != "a" || labels["k8s_namespace_name"] != "ns" {
		t.Fatalf("gauge = %v", m)
	}
}

// TestDifferentialAgainstUpstream drives the reporter and upstream's
// RequestStats (plus upstream's first-period rule) with the same random
// arrivals and completions.
func TestDifferentialAgainstUpstream(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	for iter := 0; iter < 50; iter++ {
		clk := clocktesting.NewFakeClock(t0)
		r := New("p", newFakeSink(), clk, nil)
		var up *netstats.RequestStats
		first := 0.0
		var open []Token
		now := t0
		for period := 1; period <= 5; period++ {
			end := t0.Add(time.Duration(period) * time.Second)
			for {
				now = now.Add(time.Duration(rng.Intn(120)) * time.Millisecond)
				if !now.Before(end) {
					break
				}
				clk.SetTime(now)
				if len(open) > 0 && rng.Intn(2) == 0 {
					i := rng.Intn(len(open))
					open[i].End()
					open = append(open[:i], open[i+1:]...)
					up.HandleEvent(netstats.ReqEvent{Time: now, Type: netstats.ReqOut})
					continue
				}
				if up == nil {
					up = netstats.NewRequestStats(now)
					first = 1
				}
				open = append(open, r.Begin(revA, Labels{}))
				up.HandleEvent(netstats.ReqEvent{Time: now, Type: netstats.ReqIn})
			}
			now = end
			got := byKey(r.Report(end))
			if up == nil {
				continue
			}
			rep := up.Report(end)
			want := wire.Stat{PodName: "p", AverageConcurrentRequests: math.Max(rep.AverageConcurrency-first, 0), RequestCount: rep.RequestCount - first}
			first = 0
			g, ok := got[revA]
			if !ok {
				t.Fatalf("iter %d period %d: no message", iter, period)
			}
			if math.Abs(g.AverageConcurrentRequests-want.AverageConcurrentRequests) > 1e-9 || g.RequestCount != want.RequestCount {
				t.Fatalf("iter %d period %d: got %+v, upstream %+v", iter, period, g, want)
			}
			if rep.AverageConcurrency == 0 && len(open) == 0 {
				up = nil // upstream forgets the revision too
			}
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	sink := newFakeSink()
	r := New("p", sink, clk, nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				r.Begin(revA, Labels{}).End()
				if i%100 == 0 {
					r.Report(clk.Now())
				}
			}
		}()
	}
	wg.Wait()
	if r.Tracked() > 1 {
		t.Fatal("more than one entry for one revision")
	}
}
