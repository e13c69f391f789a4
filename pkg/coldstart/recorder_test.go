package coldstart

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"k8s.io/apimachinery/pkg/types"
)

func TestRingBoundAndOrder(t *testing.T) {
	r := NewRing(3)
	if got := r.Snapshot(); got == nil || len(got) != 0 {
		t.Fatalf("empty snapshot = %#v, want empty non-nil", got)
	}
	for i := range 5 {
		r.Add(ScaleRecord{Revision: string(rune('a' + i))})
		want := ""
		for j := max(0, i-2); j <= i; j++ {
			want += string(rune('a' + j))
		}
		got := ""
		for _, rec := range r.Snapshot() {
			got += rec.Revision
		}
		if got != want {
			t.Fatalf("after %d adds: %q, want %q", i+1, got, want)
		}
	}
}

func TestRingServesJSON(t *testing.T) {
	r := NewRing(2)
	srv := httptest.NewServer(r)
	defer srv.Close()

	get := func() (int, string, string) {
		resp, err := http.Get(srv.URL + "/debug/coldstarts")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if code, ct, body := get(); code != 200 || ct != "application/json" || body != "[]" {
		t.Fatalf("empty ring: %d %s %q", code, ct, body)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 5e6, time.UTC)
	r.Add(ScaleRecord{Namespace: "ns", Revision: "r1", PokeReceived: at, Decided: at.Add(time.Millisecond),
		ScaleWritten: at.Add(3 * time.Millisecond), DesiredScale: 2})
	_, _, body := get()
	want := `[{"namespace":"ns","revision":"r1","pokeReceived":"2026-01-01T00:00:00.005Z",` +
		`"decided":"2026-01-01T00:00:00.006Z","scaleWritten":"2026-01-01T00:00:00.008Z","desiredScale":2}]`
	if body != want {
		t.Fatalf("body\n%s\nwant\n%s", body, want)
	}
	var back []ScaleRecord
	if err := json.Unmarshal([]byte(body), &back); err != nil || len(back) != 1 || !back[0].ScaleWritten.Equal(at.Add(3*time.Millisecond)) {
		t.Fatalf("decoding %s: %v %+v", body, err, back)
	}
	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

const autoscalerHist = "thaw_autoscaler_coldstart_phase_seconds"

func TestRecorder(t *testing.T) {
	reg := prometheus.NewRegistry()
	spans := tracetest.NewSpanRecorder()
	rc := NewRecorder(RecorderOptions{Ring: NewRing(4), Registerer: reg, MaxAge: time.Minute, MaxOpen: 2,
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))})
	t0 := time.Unix(5000, 0)

	rc.ScaleWritten(rev, t0, 1) // nothing open: not a cold start
	if rc.Open() != 0 || len(rc.Ring().Snapshot()) != 0 {
		t.Fatal("a patch without a record made one")
	}
	rc.Decided(rev, t0.Add(-time.Second), 1)       // opens one without a poke...
	rc.PokeReceived(rev, t0)                       // ...which a new poke supersedes: it went back to 0 unpatched
	rc.PokeReceived(rev, t0.Add(time.Millisecond)) // keeps the first
	rc.Decided(rev, t0.Add(2*time.Millisecond), 0) // not > 0
	rc.Decided(rev, t0.Add(3*time.Millisecond), 2)
	rc.ScaleWritten(rev, t0.Add(10*time.Millisecond), 2)

	got := rc.Ring().Snapshot()
	want := ScaleRecord{Namespace: "ns", Revision: "rev-00001", PokeReceived: t0, Decided: t0.Add(3 * time.Millisecond),
		ScaleWritten: t0.Add(10 * time.Millisecond), DesiredScale: 2}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("ring = %+v, want [%+v]", got, want)
	}
	for _, c := range []struct {
		phase string
		secs  float64
	}{{PhaseDecide, 0.003}, {PhaseScale, 0.007}, {PhaseTotal, 0.010}} {
		n, sum := count(t, reg, autoscalerHist, c.phase)
		if n != 1 || sum < c.secs-1e-9 || sum > c.secs+1e-9 {
			t.Errorf("phase %s: %d observations summing %v, want 1 of %v", c.phase, n, sum, c.secs)
		}
	}
	ended := spans.Ended()
	if len(ended) != 2 || ended[0].Status().Description != "superseded" {
		t.Fatalf("spans = %+v, want the superseded one and the completed one", ended)
	}
	if c := ended[1]; c.Name() != "coldstart" || len(c.Events()) != 3 || c.Events()[0].Name != EventPokeReceived ||
		c.Events()[1].Name != EventDecided || c.Events()[2].Name != EventScaleWritten || !c.EndTime().Equal(want.ScaleWritten) {
		t.Fatalf("completed span = %+v", c)
	}
	if rc.Open() != 0 {
		t.Fatalf("open = %d after completion", rc.Open())
	}

	// Bounds: one per revision, MaxOpen, Forget, MaxAge.
	other := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }
	rc.PokeReceived(other("a"), t0)
	rc.PokeReceived(other("b"), t0)
	rc.PokeReceived(other("c"), t0)
	if rc.Open() != 2 {
		t.Fatalf("open = %d, want the bound 2", rc.Open())
	}
	rc.Forget(other("a"))
	if rc.Open() != 1 {
		t.Fatalf("open = %d after Forget", rc.Open())
	}
	rc.ScaleWritten(other("a"), t0.Add(time.Second), 1)
	if len(rc.Ring().Snapshot()) != 1 {
		t.Fatal("a forgotten record was completed")
	}
	late := t0.Add(2 * time.Minute)
	rc.PokeReceived(other("b"), late) // replaces the expired one
	rc.ScaleWritten(other("b"), late.Add(time.Millisecond), 1)
	if s := rc.Ring().Snapshot(); len(s) != 2 || !s[1].PokeReceived.Equal(late) || !s[1].Decided.IsZero() {
		t.Fatalf("after expiry: %+v", s)
	}
	if n, _ := count(t, reg, autoscalerHist, PhaseDecide); n != 1 {
		t.Fatalf("decide observed %d times; a record without a decision must not add one", n)
	}

	// A periodic stat, not a poke, took it above 0: the record has no poke.
	rc.Decided(other("d"), late, 1)
	rc.ScaleWritten(other("d"), late.Add(2*time.Millisecond), 1)
	s := rc.Ring().Snapshot()
	if last := s[len(s)-1]; last.Revision != "d" || !last.PokeReceived.IsZero() || !last.Decided.Equal(late) {
		t.Fatalf("pokeless record = %+v", last)
	}
	if n, _ := count(t, reg, autoscalerHist, PhaseScale); n != 2 {
		t.Fatalf("scale observed %d times, want 2", n)
	}
	if n, _ := count(t, reg, autoscalerHist, PhaseTotal); n != 2 {
		t.Fatalf("total observed %d times, want 2 (not for the pokeless record)", n)
	}
}

// The pacer's view: PokedAt orders wake-ups by the poke (or the decision
// without one), and Paced lands in the record, its JSON and the paced phase.
func TestRecorderPaced(t *testing.T) {
	reg := prometheus.NewRegistry()
	rc := NewRecorder(RecorderOptions{Registerer: reg})
	t0 := time.Unix(5000, 0)
	if _, ok := rc.PokedAt(rev); ok {
		t.Fatal("PokedAt with nothing open")
	}
	rc.Decided(rev, t0, 1)
	if at, ok := rc.PokedAt(rev); !ok || !at.Equal(t0) {
		t.Fatalf("PokedAt without a poke = %v %v, want the decision", at, ok)
	}
	other := types.NamespacedName{Namespace: "ns", Name: "other"}
	rc.PokeReceived(other, t0.Add(time.Second))
	if at, ok := rc.PokedAt(other); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("PokedAt = %v %v, want the poke", at, ok)
	}
	rc.Decided(other, t0.Add(2*time.Second), 1)
	rc.Paced(other, 1500*time.Millisecond)
	rc.ScaleWritten(other, t0.Add(4*time.Second), 1)
	rc.ScaleWritten(rev, t0.Add(time.Second), 1)
	recs := rc.Ring().Snapshot()
	if len(recs) != 2 || recs[0].PacedSeconds != 1.5 || recs[1].PacedSeconds != 0 {
		t.Fatalf("records %+v, want 1.5 s paced then none", recs)
	}
	b, _ := json.Marshal(recs)
	if !strings.Contains(string(b), `"pacedSeconds":1.5}`) || strings.Count(string(b), "pacedSeconds") != 1 {
		t.Fatalf("JSON %s: want pacedSeconds only where paced", b)
	}
	if n, sum := count(t, reg, autoscalerHist, PhasePaced); n != 2 || sum != 1.5 {
		t.Fatalf("paced phase: %d observations summing %v, want 2 summing 1.5", n, sum)
	}
}
