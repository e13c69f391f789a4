package coldstart

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
)

var rev = types.NamespacedName{Namespace: "ns", Name: "rev-00001"}

// routes is a Routable stub.
type routes struct {
	mu sync.Mutex
	ok map[types.NamespacedName]bool
}

func (r *routes) set(rev types.NamespacedName, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ok == nil {
		r.ok = map[types.NamespacedName]bool{}
	}
	r.ok[rev] = ok
}

func (r *routes) Routable(rev types.NamespacedName) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok[rev]
}

type trackerHarness struct {
	clk    *clocktesting.FakeClock
	routes *routes
	reg    *prometheus.Registry
	spans  *tracetest.SpanRecorder
	tr     *Tracker
}

func newTrackerHarness(t *testing.T, mod func(*TrackerOptions)) *trackerHarness {
	t.Helper()
	h := &trackerHarness{
		clk:    clocktesting.NewFakeClock(time.Unix(1000, 0)),
		routes: &routes{},
		reg:    prometheus.NewRegistry(),
		spans:  tracetest.NewSpanRecorder(),
	}
	opts := TrackerOptions{
		Routable:       h.routes.Routable,
		Clock:          h.clk,
		Registerer:     h.reg,
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans)),
	}
	if mod != nil {
		mod(&opts)
	}
	h.tr = NewTracker(opts)
	return h
}

// count returns the number of observations of phase and their sum.
func count(t *testing.T, reg *prometheus.Registry, name, phase string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "phase" && l.GetValue() == phase {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return 0, 0
}

const activatorHist = "thaw_activator_coldstart_phase_seconds"

func TestTrackerPhases(t *testing.T) {
	h := newTrackerHarness(t, nil)
	t0 := h.clk.Now()
	first := h.tr.Arrive(context.Background(), rev)
	if first == nil {
		t.Fatal("request to a revision without pods is warm")
	}
	h.clk.Step(2 * time.Millisecond)
	h.tr.PokeSent(rev, h.clk.Now())
	h.clk.Step(time.Millisecond)
	second := h.tr.Arrive(context.Background(), rev) // joins
	h.tr.PokeSent(rev, h.clk.Now())                  // a second poke does not move the first
	h.clk.Step(500 * time.Millisecond)
	h.tr.PodReady(rev, h.clk.Now())
	h.routes.set(rev, true)
	h.clk.Step(10 * time.Millisecond)
	tl := first.FirstByte("10.0.0.1:8012")
	first.End()

	want := ActivatorTimeline{Arrival: t0, PokeSent: t0.Add(2 * time.Millisecond), PodReady: t0.Add(503 * time.Millisecond),
		FirstByte: t0.Add(513 * time.Millisecond), Pod: "10.0.0.1:8012"}
	if tl != want {
		t.Fatalf("timeline = %+v, want %+v", tl, want)
	}
	if h.tr.Open() != 0 {
		t.Fatalf("open cold starts after the first byte = %d", h.tr.Open())
	}
	for _, c := range []struct {
		phase string
		secs  float64
	}{{PhasePoke, 0.002}, {PhasePodReady, 0.501}, {PhaseFirstByte, 0.010}, {PhaseTotal, 0.513}} {
		n, sum := count(t, h.reg, activatorHist, c.phase)
		if n != 1 || sum < c.secs-1e-9 || sum > c.secs+1e-9 {
			t.Errorf("phase %s: %d observations summing %v, want 1 of %v", c.phase, n, sum, c.secs)
		}
	}

	// The joined request gets its own arrival and first byte, the shared
	// poke and ready, and observes nothing more.
	h.clk.Step(time.Millisecond)
	tl2 := second.FirstByte("10.0.0.2:8012")
	second.End()
	if !tl2.Arrival.Equal(t0.Add(3*time.Millisecond)) || !tl2.PokeSent.Equal(want.PokeSent) || !tl2.PodReady.Equal(want.PodReady) ||
		!tl2.FirstByte.Equal(t0.Add(514*time.Millisecond)) {
		t.Fatalf("joined timeline = %+v", tl2)
	}
	if n, _ := count(t, h.reg, activatorHist, PhaseTotal); n != 1 {
		t.Fatalf("total observed %d times, want 1", n)
	}
	if h.tr.Arrive(context.Background(), rev) != nil {
		t.Fatal("request to a routable revision is not warm")
	}

	spans := h.spans.Ended()
	if len(spans) != 1 || spans[0].Name() != "coldstart" {
		t.Fatalf("spans = %v", spans)
	}
	var events []string
	for _, e := range spans[0].Events() {
		events = append(events, e.Name)
	}
	if got := strings.Join(events, ","); got != "poke_sent,pod_ready,first_byte" {
		t.Fatalf("span events = %s", got)
	}
	if !spans[0].StartTime().Equal(t0) || !spans[0].EndTime().Equal(want.FirstByte) {
		t.Fatalf("span %v..%v, want %v..%v", spans[0].StartTime(), spans[0].EndTime(), t0, want.FirstByte)
	}
}

func TestTrackerUnknownPhasesNotObserved(t *testing.T) {
	h := newTrackerHarness(t, nil)
	r := h.tr.Arrive(context.Background(), rev)
	h.clk.Step(time.Second)
	h.tr.PodReady(rev, h.clk.Now())
	h.clk.Step(time.Second)
	tl := r.FirstByte("p:1")
	r.End()
	if !tl.PokeSent.IsZero() || !strings.HasPrefix(tl.Header(), "arrival=") || strings.Contains(tl.Header(), "poke=") {
		t.Fatalf("timeline without poke = %+v (%s)", tl, tl.Header())
	}
	for phase, want := range map[string]uint64{PhasePoke: 0, PhasePodReady: 0, PhaseFirstByte: 1, PhaseTotal: 1} {
		if n, _ := count(t, h.reg, activatorHist, phase); n != want {
			t.Errorf("phase %s observed %d times, want %d", phase, n, want)
		}
	}
}

func TestTrackerBounds(t *testing.T) {
	t.Run("last request ends without a response", func(t *testing.T) {
		h := newTrackerHarness(t, nil)
		a, b := h.tr.Arrive(context.Background(), rev), h.tr.Arrive(context.Background(), rev)
		a.End()
		a.End() // twice is once
		if h.tr.Open() != 1 {
			t.Fatalf("open = %d while a request is still waiting", h.tr.Open())
		}
		b.End()
		if h.tr.Open() != 0 {
			t.Fatalf("open = %d after every request ended", h.tr.Open())
		}
		if n, _ := count(t, h.reg, activatorHist, PhaseTotal); n != 0 {
			t.Fatalf("an abandoned cold start was observed")
		}
		if s := h.spans.Ended(); len(s) != 1 || s[0].Status().Description != "no response" {
			t.Fatalf("abandoned span = %v", s)
		}
	})
	t.Run("revision deleted", func(t *testing.T) {
		h := newTrackerHarness(t, nil)
		r := h.tr.Arrive(context.Background(), rev)
		h.tr.Forget(rev)
		if h.tr.Open() != 0 {
			t.Fatal("deleted revision's cold start still open")
		}
		h.tr.PokeSent(rev, h.clk.Now()) // no cold start: ignored
		r.FirstByte("p:1")
		r.End()
		if n, _ := count(t, h.reg, activatorHist, PhaseTotal); n != 0 {
			t.Fatal("a forgotten cold start was observed")
		}
	})
	t.Run("max age", func(t *testing.T) {
		h := newTrackerHarness(t, func(o *TrackerOptions) { o.MaxAge = time.Minute })
		old := h.tr.Arrive(context.Background(), rev) // never ends (leaked)
		h.tr.PokeSent(rev, h.clk.Now())
		h.clk.Step(2 * time.Minute)
		fresh := h.tr.Arrive(context.Background(), rev)
		tl := fresh.FirstByte("p:1")
		if !tl.PokeSent.IsZero() || !tl.Arrival.Equal(h.clk.Now()) {
			t.Fatalf("a cold start past MaxAge was joined: %+v", tl)
		}
		_ = old
	})
	t.Run("max open", func(t *testing.T) {
		h := newTrackerHarness(t, func(o *TrackerOptions) { o.MaxOpen = 3; o.MaxAge = time.Minute })
		for i := range 10 {
			h.tr.Arrive(context.Background(), types.NamespacedName{Namespace: "ns", Name: string(rune('a' + i))})
		}
		if h.tr.Open() != 3 {
			t.Fatalf("open = %d, want the bound 3", h.tr.Open())
		}
		// An untracked cold request still gets its own timeline.
		r := h.tr.Arrive(context.Background(), rev)
		if r == nil || r.FirstByte("p:1").Arrival.IsZero() {
			t.Fatal("untracked cold request has no timeline")
		}
		r.End()
		// Once the old ones expire, new cold starts are tracked again.
		h.clk.Step(2 * time.Minute)
		h.tr.Arrive(context.Background(), rev)
		if h.tr.Open() != 1 {
			t.Fatalf("open = %d after expiry, want 1", h.tr.Open())
		}
	})
	t.Run("poke before arrival is not this cold start's", func(t *testing.T) {
		h := newTrackerHarness(t, nil)
		before := h.clk.Now()
		h.clk.Step(time.Second)
		r := h.tr.Arrive(context.Background(), rev)
		h.tr.PokeSent(rev, before)
		if tl := r.FirstByte("p:1"); !tl.PokeSent.IsZero() {
			t.Fatalf("stale poke recorded: %+v", tl)
		}
	})
}

func TestWriterSetsHeaderBeforeFirstByte(t *testing.T) {
	for _, c := range []struct {
		name   string
		set    bool
		write  func(w http.ResponseWriter)
		status int
	}{
		{"WriteHeader", true, func(w http.ResponseWriter) { w.WriteHeader(http.StatusAccepted) }, http.StatusAccepted},
		{"Write", true, func(w http.ResponseWriter) { w.Write([]byte("x")) }, http.StatusOK},
		{"Flush", true, func(w http.ResponseWriter) { http.NewResponseController(w).Flush() }, http.StatusOK},
		{"not opted in", false, func(w http.ResponseWriter) { w.Write([]byte("x")) }, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newTrackerHarness(t, nil)
			r := h.tr.Arrive(context.Background(), rev)
			h.clk.Step(time.Second)
			rec := httptest.NewRecorder()
			c.write(r.Writer(rec, "10.0.0.9:8012", c.set))
			r.End()
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d", rec.Code, c.status)
			}
			v := rec.Result().Header.Get(ResponseHeader)
			if !c.set {
				if v != "" {
					t.Fatalf("header %q without opt-in", v)
				}
			} else {
				tl, warm, err := ParseHeader(v)
				if err != nil || warm || tl.Pod != "10.0.0.9:8012" || tl.FirstByte.Sub(tl.Arrival) != time.Second {
					t.Fatalf("header %q: %+v %v %v", v, tl, warm, err)
				}
			}
			if n, _ := count(t, h.reg, activatorHist, PhaseTotal); n != 1 {
				t.Fatalf("total observed %d times, want 1", n)
			}
		})
	}
}

func TestWriterInformationalIsNotFirstByte(t *testing.T) {
	h := newTrackerHarness(t, nil)
	r := h.tr.Arrive(context.Background(), rev)
	w := r.Writer(httptest.NewRecorder(), "p:1", true)
	w.WriteHeader(http.StatusEarlyHints)
	if h.tr.Open() != 1 {
		t.Fatal("a 103 ended the cold start")
	}
	w.WriteHeader(http.StatusOK)
	if h.tr.Open() != 0 {
		t.Fatal("the final status did not end the cold start")
	}
}

func TestPhaseHistogramBuckets(t *testing.T) {
	if b := Buckets(); b[0] != 0.001 || b[len(b)-1] != 60 {
		t.Fatalf("buckets %v do not span 1 ms..60 s", b)
	}
	reg := prometheus.NewRegistry()
	// Both register under distinct names in one registry (MustRegister
	// panics otherwise).
	tr := NewTracker(TrackerOptions{Routable: func(types.NamespacedName) bool { return false }, Registerer: reg})
	rc := NewRecorder(RecorderOptions{Registerer: reg})
	r := tr.Arrive(context.Background(), rev)
	r.FirstByte("p:1")
	rc.PokeReceived(rev, time.Unix(1, 0))
	rc.ScaleWritten(rev, time.Unix(2, 0), 1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		if got := len(mf.GetMetric()[0].GetHistogram().GetBucket()); got != len(Buckets()) {
			t.Errorf("%s has %d buckets, want %d", mf.GetName(), got, len(Buckets()))
		}
	}
	if got := strings.Join(names, ","); got != "thaw_activator_coldstart_phase_seconds,thaw_autoscaler_coldstart_phase_seconds" {
		t.Fatalf("families = %s", got)
	}
}

// BenchmarkArriveWarm is the tracker's cost for a warm request with the
// throttler's Routable stood in by a map read.
func BenchmarkArriveWarm(b *testing.B) {
	ready := map[types.NamespacedName]bool{rev: true}
	tr := NewTracker(TrackerOptions{Routable: func(r types.NamespacedName) bool { return ready[r] }})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if tr.Arrive(ctx, rev) != nil {
			b.Fatal("cold")
		}
	}
}
