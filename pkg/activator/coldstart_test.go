package activator

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// TestColdStartTiming runs a scale from zero through the handler with the
// real throttler and reporter on a fake clock: the opted-in cold request
// gets its timeline, the pod never sees the opt-in header, warm requests
// get "warm" only when they ask, and the phases land in the histogram and
// in a "coldstart" span under the request's "handle" span.
func TestColdStartTiming(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	thr := throttler.New("10.0.0.1", throttler.Options{}, clk, zaptest.NewLogger(t).Sugar())
	reg := prometheus.NewRegistry()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tr := coldstart.NewTracker(coldstart.TrackerOptions{Routable: thr.Routable, Clock: clk, Registerer: reg, TracerProvider: tp})
	sink := &pokeSink{pokes: make(chan wire.StatMessage, 1)}
	optInSeen := make(chan bool, 4)
	px := funcProxy(func(w http.ResponseWriter, r *http.Request, dest string) error {
		optInSeen <- r.Header.Get(coldstart.RequestHeader) != ""
		clk.Step(10 * time.Millisecond) // the pod's time to answer
		io.WriteString(w, "ok")
		return nil
	})
	h := newTestHandler(t, thr, px, func(c *testConfig) {
		c.Reporter = concurrency.New("act-0", sink, clk, nil)
		c.ColdStarts = tr
		c.Clock = clk
		c.TracerProvider = tp
	})
	const pod = "10.1.0.1:8012"
	t0 := clk.Now()

	req := revRequest(http.MethodGet)
	req.Header.Set(coldstart.RequestHeader, "1")
	res := serveAsync(h, req)
	testutil.Eventually(t, "the request to wait in the throttler", func() bool { q, _ := thr.Stats(testRev); return q == 1 })
	<-sink.pokes // the reporter poked; the sink writes it a little later
	clk.Step(2 * time.Millisecond)
	tr.PokeSent(testRev, clk.Now())
	clk.Step(500 * time.Millisecond)
	tr.PodReady(testRev, clk.Now()) // as the backends tap does before handing the pod over
	thr.UpdateBackends(testRev, throttler.Backends{Dests: []string{pod}})
	got := <-res

	if got.code != 200 || <-optInSeen {
		t.Fatalf("status %d; the pod saw the opt-in header: want 200 and no", got.code)
	}
	tl, warm, err := coldstart.ParseHeader(got.hdr.Get(coldstart.ResponseHeader))
	if err != nil || warm {
		t.Fatalf("header %q: warm %v, %v", got.hdr.Get(coldstart.ResponseHeader), warm, err)
	}
	want := coldstart.ActivatorTimeline{Arrival: t0, PokeSent: t0.Add(2 * time.Millisecond), PodReady: t0.Add(502 * time.Millisecond),
		FirstByte: t0.Add(512 * time.Millisecond), Pod: pod}
	if !tl.Arrival.Equal(want.Arrival) || !tl.PokeSent.Equal(want.PokeSent) || !tl.PodReady.Equal(want.PodReady) ||
		!tl.FirstByte.Equal(want.FirstByte) || tl.Pod != want.Pod {
		t.Fatalf("timeline %+v, want %+v", tl, want)
	}
	if tr.Open() != 0 {
		t.Fatalf("%d cold starts still open", tr.Open())
	}
	if n, sum := histogram(t, reg, "total"); n != 1 || sum < 0.512-1e-9 || sum > 0.512+1e-9 {
		t.Fatalf("total: %d observations, sum %v; want 1 of 0.512", n, sum)
	}

	// Warm: "warm" only on request, never a second cold start.
	for _, optIn := range []bool{true, false} {
		req := revRequest(http.MethodGet)
		if optIn {
			req.Header.Set(coldstart.RequestHeader, "yes")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		<-optInSeen
		v := rec.Header().Get(coldstart.ResponseHeader)
		if (optIn && v != coldstart.Warm) || (!optIn && v != "") {
			t.Fatalf("warm request (opt-in %v): header %q", optIn, v)
		}
	}
	if n, _ := histogram(t, reg, "total"); n != 1 {
		t.Fatalf("total observed %d times after warm requests, want 1", n)
	}

	var handle, cold sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch s.Name() {
		case "handle":
			if handle == nil {
				handle = s
			}
		case "coldstart":
			if cold != nil {
				t.Fatal("two coldstart spans for one cold start")
			}
			cold = s
		}
	}
	if cold == nil || handle == nil || cold.Parent().SpanID() != handle.SpanContext().SpanID() {
		t.Fatalf("coldstart span %v is not a child of the first handle span %v", cold, handle)
	}
	if ev := cold.Events(); len(ev) != 3 || ev[0].Name != "poke_sent" || ev[1].Name != "pod_ready" || ev[2].Name != "first_byte" {
		t.Fatalf("coldstart events = %+v", ev)
	}
}

// TestColdStartEndsWithFailedRequest: a cold request that never reaches a
// pod (client gone) leaves nothing open and no header.
func TestColdStartEndsWithFailedRequest(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	reg := prometheus.NewRegistry()
	tr := coldstart.NewTracker(coldstart.TrackerOptions{Routable: func(types.NamespacedName) bool { return false }, Clock: clk, Registerer: reg})
	h := newTestHandler(t, &fakeThrottler{err: throttler.ErrQueueFull}, okProxy, func(c *testConfig) { c.ColdStarts = tr; c.Clock = clk })
	req := revRequest(http.MethodGet)
	req.Header.Set(coldstart.RequestHeader, "1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get(coldstart.ResponseHeader) != "" {
		t.Fatalf("status %d, header %q", rec.Code, rec.Header().Get(coldstart.ResponseHeader))
	}
	if tr.Open() != 0 {
		t.Fatal("a failed cold request left its cold start open")
	}
	if n, _ := histogram(t, reg, "total"); n != 0 {
		t.Fatal("a failed cold start was observed")
	}
}

func histogram(t *testing.T, reg *prometheus.Registry, phase string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "thaw_activator_coldstart_phase_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == phase {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

// BenchmarkWarmRequest measures the handler without a network for a warm
// revision, with and without the cold-start tracker, and with the opt-in
// header: the tracker's warm path is one Routable call.
func BenchmarkWarmRequest(b *testing.B) {
	thr := throttler.New("10.0.0.1", throttler.Options{}, clock.RealClock{}, zap.NewNop().Sugar())
	thr.UpsertRevision(testRev, throttler.RevisionConfig{})
	thr.UpdateBackends(testRev, throttler.Backends{Dests: []string{"10.1.0.1:8012"}})
	px := funcProxy(func(w http.ResponseWriter, _ *http.Request, _ string) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	for _, c := range []struct {
		name          string
		tracker, want bool
	}{{"no tracker", false, false}, {"tracker", true, false}, {"tracker opt-in", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := testConfig{Config: Config{Throttler: thr, Proxy: px, Logger: zap.NewNop().Sugar()}, Revisions: fakeRevisions{testRev: testInfo()}}
			if c.tracker {
				cfg.ColdStarts = coldstart.NewTracker(coldstart.TrackerOptions{Routable: thr.Routable})
			}
			h := newChain(cfg)
			req := revRequest(http.MethodGet)
			b.ReportAllocs()
			for b.Loop() {
				if c.want {
					req.Header.Set(coldstart.RequestHeader, "1")
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if c.want && rec.Header().Get(coldstart.ResponseHeader) != coldstart.Warm {
					b.Fatal("no warm header")
				}
			}
		})
	}
}
