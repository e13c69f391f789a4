package report

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/load"
)

var t0 = time.Unix(1_700_000_000, 0)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func sampleRun() *Run {
	r := &Run{Side: "thaw", Scenario: "autoscaler-kill", SLO: 1, Steady: "steady",
		Start: at(0), FaultStart: at(10), FaultEnd: at(70), End: at(100)}
	for s := 0.0; s < 100; s++ {
		o := load.Outcome{Stream: "steady", Target: "steady", Send: at(s), Status: 200, Class: load.OK, Latency: 100 * time.Millisecond}
		if s == 25 || s == 26 {
			o = load.Outcome{Stream: "steady", Target: "steady", Send: at(s), Class: load.Reset, Error: "connection reset"}
		}
		if s == 80 {
			o = load.Outcome{Stream: "cold", Target: "cold-00", Send: at(s), Status: 503, Class: load.Status5xx}
		}
		r.Outcomes = append(r.Outcomes, o)
	}
	r.Marks = []fault.Mark{
		{Time: at(20), Kind: "inject", Target: "autoscaler-abc (SIGKILL) holding 2 buckets"},
		{Time: at(20), Kind: "undo", Target: "autoscaler-abc (SIGKILL) holding 2 buckets"},
		{Time: at(40), Kind: "inject", Target: "autoscaler-def (SIGKILL) holding 1 buckets"},
	}
	// Steady desired scale 2, one dip to 0 right after the first kill, a rise to 3 90 s later (out of
	// the window).
	for s := 0.0; s < 100; s++ {
		d := int64(2)
		if s == 22 {
			d = 0
		}
		r.Scale = append(r.Scale, ScaleSample{Time: at(s), PA: "steady", Desired: d}, ScaleSample{Time: at(s), PA: "cold-00", Desired: 5})
	}
	// Buckets 00 and 01 held by abc, renewed by xyz 3 s and 16 s after the kill; 02 by def, never again.
	lease := func(s float64, name, holder string, renew float64) LeaseSample {
		return LeaseSample{Time: at(s), Lease: name, Holder: holder, Renew: at(renew)}
	}
	r.Leases = []LeaseSample{
		lease(19, "b00", "autoscaler-abc_10.0.0.1", 18), lease(19, "b01", "autoscaler-abc_10.0.0.1", 18), lease(19, "b02", "autoscaler-def_10.0.0.2", 19),
		lease(24, "b00", "autoscaler-xyz_10.0.0.3", 23), lease(24, "b01", "autoscaler-abc_10.0.0.1", 18),
		lease(37, "b01", "autoscaler-xyz_10.0.0.3", 36),
		lease(39, "b02", "autoscaler-def_10.0.0.2", 39),
	}
	return r
}

func TestPhase(t *testing.T) {
	r := sampleRun()
	for _, tc := range []struct {
		s    float64
		want string
	}{{0, Before}, {9.9, Before}, {10, During}, {69.9, During}, {70, After}, {99, After}} {
		if got := r.Phase(at(tc.s)); got != tc.want {
			t.Errorf("Phase(%v) = %s, want %s", tc.s, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	r := sampleRun()
	s := r.Summarize()
	if s.All.Total != 100 || s.All.Failed != 3 {
		t.Errorf("all = %+v, want 100 with 3 lost", s.All)
	}
	if s.Phases[Before].Failed != 0 || s.Phases[During].Failed != 2 || s.Phases[After].Failed != 1 {
		t.Errorf("phases = %+v", s.Phases)
	}
	if s.Exposed.Total != 90 || s.MeetsSLO {
		t.Errorf("exposed = %+v meets %v, want 90 and a missed SLO of 1.0", s.Exposed, s.MeetsSLO)
	}
	if s.Classes[load.Reset] != 2 || s.Classes[load.Status5xx] != 1 {
		t.Errorf("classes = %v", s.Classes)
	}
	if s.Injections != 2 || len(s.Kills) != 2 {
		t.Fatalf("injections %d kills %d, want 2", s.Injections, len(s.Kills))
	}
	if k := s.Kills[0]; k.Deviation != 2 || k.Buckets != 2 || k.HandOff != 16*time.Second {
		t.Errorf("first kill = %+v, want deviation 2, 2 buckets, hand-off 16s (the slower bucket)", k)
	}
	if k := s.Kills[1]; k.Deviation != 0 || k.Buckets != 1 || k.HandOff != -1 {
		t.Errorf("second kill = %+v, want no deviation (the dip was before it) and no renewal", k)
	}
	if s.MaxDeviation != 2 || s.HandOffMax != 16*time.Second {
		t.Errorf("max deviation %d hand-off %s", s.MaxDeviation, s.HandOffMax)
	}
}

func TestFiles(t *testing.T) {
	r := sampleRun()
	r.Summary = r.Summarize()
	runs := []*Run{r}
	var b bytes.Buffer
	if err := WriteCSV(&b, runs); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(b.String(), "\n"); lines != 101 {
		t.Errorf("csv has %d lines, want a header and 100 rows", lines)
	}
	b.Reset()
	if err := WriteJSON(&b, "thaw chaos run autoscaler-kill", at(0), at(100), runs); err != nil || !strings.Contains(b.String(), `"max_desired_deviation": 2`) {
		t.Errorf("json: %v\n%s", err, b.String())
	}
	b.Reset()
	if err := WriteTable(&b, runs); err != nil || !strings.Contains(b.String(), "autoscaler-kill") || !strings.Contains(b.String(), "FAIL") {
		t.Errorf("table: %v\n%s", err, b.String())
	}
	for _, f := range []Format{SVG, PNG} {
		b.Reset()
		if err := WritePlot(&b, runs, f); err != nil || b.Len() == 0 {
			t.Errorf("plot %s: %v", f, err)
		}
	}
	if err := WritePlot(&b, nil, SVG); err == nil {
		t.Error("no error for an empty plot")
	}
}

// Requests to the doomed service fail from the fault's start until it serves again after the undo:
// those are expected, counted apart; a failure before the fault or after the recovery is lost.
func TestDoomedFailuresAreCountedApart(t *testing.T) {
	r := &Run{Side: "thaw", Scenario: "never-ready", SLO: 1, Steady: "steady", Doomed: "never",
		Start: at(0), FaultStart: at(10), FaultEnd: at(70), End: at(100)}
	r.Marks = []fault.Mark{{Time: at(10), Kind: "inject"}, {Time: at(40), Kind: "undo"}}
	add := func(s float64, target string, ok bool) {
		o := load.Outcome{Stream: "doomed", Target: target, Send: at(s), Status: 200, Class: load.OK}
		if !ok {
			o.Status, o.Class, o.Hop, o.Latency = 503, load.Status5xx, load.HopActivator, 2*time.Second
		}
		r.Outcomes = append(r.Outcomes, o)
	}
	add(5, "never", false)  // before the fault: lost
	add(8, "never", true)   // fine
	add(15, "never", false) // expected
	add(30, "never", false) // expected
	add(42, "never", false) // after the undo, not yet served: expected
	add(45, "never", true)  // served again 5 s after the undo
	add(50, "never", false) // after its recovery: lost
	add(20, "steady", false)
	s := r.Summarize()
	if s.Expected.Total != 3 || s.Expected.Failed != 3 || s.ExpectedClasses[load.Status5xx] != 3 || s.ExpectedP50 != 2*time.Second {
		t.Errorf("expected = %+v %v p50 %s", s.Expected, s.ExpectedClasses, s.ExpectedP50)
	}
	if s.All.Total != 5 || s.All.Failed != 3 || s.Hops[load.HopActivator] != 3 {
		t.Errorf("all = %+v hops %v, want 5 with 3 lost", s.All, s.Hops)
	}
	if s.Recovery != 5*time.Second {
		t.Errorf("recovery %s, want 5s", s.Recovery)
	}
	var b bytes.Buffer
	if err := WriteCSV(&b, []*Run{r}); err != nil || strings.Count(b.String(), ",expected,") != 3 || strings.Count(b.String(), ",lost,") != 3 {
		t.Errorf("csv: %v\n%s", err, b.String())
	}
	r.Summary = s
	b.Reset()
	if err := WriteTable(&b, []*Run{r}); err != nil || !strings.Contains(b.String(), "3/3 (5xx=3, p50 2s), served 5s after the undo") {
		t.Errorf("table: %v\n%s", err, b.String())
	}
	// Never served again: every failure from the fault on is expected, and the table says so.
	r.Outcomes = r.Outcomes[:5]
	if s := r.Summarize(); s.Recovery != -1 || s.Expected.Total != 3 {
		t.Errorf("no recovery: %+v %s", s.Expected, s.Recovery)
	}
}
