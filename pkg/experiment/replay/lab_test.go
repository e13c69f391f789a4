package replay

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/trace"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fired is one call of Dispatch's fire.
type fired struct {
	i    int
	at   time.Time
	late time.Duration
}

type recorder struct {
	mu  sync.Mutex
	got []fired
}

func (r *recorder) add(f fired) {
	r.mu.Lock()
	r.got = append(r.got, f)
	r.mu.Unlock()
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// drive steps the fake clock by step whenever the dispatcher waits on it,
// until it returns on done (testutil.StepUntil: bounded by testutil.Timeout).
func drive(t *testing.T, clk *clocktesting.FakeClock, step time.Duration, done <-chan error) error {
	t.Helper()
	var err error
	testutil.StepUntil(t, clk, step, func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	return err
}

func TestDispatchOnTime(t *testing.T) {
	arr := []Arrival{{At: 0}, {At: 100 * time.Millisecond}, {At: 100 * time.Millisecond}, {At: time.Second}, {At: 3 * time.Second}}
	clk := clocktesting.NewFakeClock(t0)
	rec := &recorder{}
	done := make(chan error, 1)
	go func() {
		done <- Dispatch(context.Background(), clk, t0, arr, 10, func(_ context.Context, i int, late time.Duration) {
			rec.add(fired{i, clk.Now(), late})
		})
	}()
	if err := drive(t, clk, 50*time.Millisecond, done); err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != len(arr) {
		t.Fatalf("%d calls, want %d", len(rec.got), len(arr))
	}
	seen := map[int]bool{}
	for _, f := range rec.got {
		seen[f.i] = true
		// late is read by the dispatcher as it starts the call; the
		// call's own reading of the clock may come after a later step.
		if f.late != 0 || f.at.Before(t0.Add(arr[f.i].At)) {
			t.Errorf("arrival %d fired at %v late %v, want at %v on time", f.i, f.at.Sub(t0), f.late, arr[f.i].At)
		}
	}
	if len(seen) != len(arr) {
		t.Errorf("arrivals fired %v: want each once", seen)
	}
}

func TestDispatchBoundLate(t *testing.T) {
	// One request at a time: the second waits for the first to end and
	// reports how late it started.
	arr := []Arrival{{At: 0}, {At: 100 * time.Millisecond}}
	clk := clocktesting.NewFakeClock(t0)
	rec := &recorder{}
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Dispatch(context.Background(), clk, t0, arr, 1, func(_ context.Context, i int, late time.Duration) {
			rec.add(fired{i, clk.Now(), late})
			if i == 0 {
				<-release
			}
		})
	}()
	testutil.Eventually(t, "the first arrival fired", func() bool { return rec.len() > 0 })
	testutil.StepWhenWaiting(t, clk, 300*time.Millisecond) // past the second's time; it waits for the bound
	close(release)
	if err := drive(t, clk, 50*time.Millisecond, done); err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != 2 || rec.got[1].i != 1 || rec.got[1].late != 200*time.Millisecond {
		t.Fatalf("calls %+v: want the second 200ms late", rec.got)
	}
}

func TestDispatchCancel(t *testing.T) {
	arr := []Arrival{{At: 0}, {At: time.Hour}}
	clk := clocktesting.NewFakeClock(t0)
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	done := make(chan error, 1)
	go func() {
		done <- Dispatch(ctx, clk, t0, arr, 4, func(_ context.Context, i int, late time.Duration) { rec.add(fired{i, clk.Now(), late}) })
	}()
	testutil.Eventually(t, "the dispatcher waiting on the clock", clk.HasWaiters)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || rec.len() != 1 {
			t.Fatalf("err %v after %d calls: want context.Canceled after 1", err, rec.len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dispatch did not return on cancel")
	}
}

func planOptions(dir string) PlanOptions {
	return PlanOptions{Trace: dir, Window: trace.Window{From: 30 * time.Minute, To: 90 * time.Minute}, Functions: 10,
		MaxInvocations: 1000, Speed: 10, Spread: sim.SpreadUniform, Seed: 3, DefaultMemoryMB: 256, DefaultDuration: time.Second}
}

func TestBuildPlan(t *testing.T) {
	dir := writeTrace(t)
	o := planOptions(dir)
	p, err := BuildPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	// every10 has 6 invocations in minutes 30..89, every1 60.
	if len(p.Functions) != 2 || p.Functions[0].Requests != 6 || p.Functions[1].Requests != 60 || len(p.Arrivals) != 66 {
		t.Fatalf("functions %+v, %d arrivals", p.Functions, len(p.Arrivals))
	}
	if p.Horizon != 6*time.Minute {
		t.Errorf("horizon %v, want the hour at speed 10: 6m", p.Horizon)
	}
	// The arrivals are the simulation's requests, shifted to the window and
	// compressed, in time order.
	for i := range p.Functions {
		var want []Arrival
		w := p.TraceWorkload(i)
		w.Reset()
		for q, ok := w.Next(); ok; q, ok = w.Next() {
			if q.At < o.Window.From || q.At >= o.Window.To {
				t.Fatalf("request at %v outside the window", q.At)
			}
			want = append(want, Arrival{Fn: i, At: (q.At - o.Window.From) / 10, Sleep: q.Duration / 10})
		}
		var got []Arrival
		for _, a := range p.Arrivals {
			if a.Fn == i {
				got = append(got, a)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d arrivals, want %d", p.Functions[i].Name, len(got), len(want))
		}
		for k := range got {
			if d := got[k].At - want[k].At; d < -time.Nanosecond || d > time.Nanosecond || got[k].Sleep/time.Microsecond != want[k].Sleep/time.Microsecond {
				t.Fatalf("%s arrival %d: %+v, want %+v", p.Functions[i].Name, k, got[k], want[k])
			}
		}
		// The wall-clock workload the simulation of the cluster runs is
		// the same requests.
		ww := p.WallWorkload(i)
		ww.Reset()
		k := 0
		for q, ok := ww.Next(); ok; q, ok = ww.Next() {
			if q.At != got[k].At || q.Duration != got[k].Sleep {
				t.Fatalf("wall workload request %d %+v, arrival %+v", k, q, got[k])
			}
			k++
		}
		if ww.Horizon() != p.Horizon || k != len(got) {
			t.Errorf("wall workload: %d requests, horizon %v", k, ww.Horizon())
		}
	}
	for k := 1; k < len(p.Arrivals); k++ {
		if p.Arrivals[k].At < p.Arrivals[k-1].At {
			t.Fatalf("arrivals out of order at %d", k)
		}
	}
	// The same options give the same plan (the seed, not the run, decides).
	p2, err := BuildPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	for k := range p.Arrivals {
		if p.Arrivals[k] != p2.Arrivals[k] {
			t.Fatalf("arrival %d differs between two plans: %+v, %+v", k, p.Arrivals[k], p2.Arrivals[k])
		}
	}
}

func TestBuildPlanSelection(t *testing.T) {
	dir := writeTrace(t)
	tests := []struct {
		name    string
		edit    func(*PlanOptions)
		fns     int
		skipped int
		err     string
	}{
		{"first function only", func(o *PlanOptions) { o.Functions = 1 }, 1, 0, ""},
		{"busy one left out", func(o *PlanOptions) { o.MaxInvocations = 10 }, 1, 1, ""},
		{"none left", func(o *PlanOptions) {
			o.MaxInvocations = 1
			o.Window = trace.Window{From: 31 * time.Minute, To: 39 * time.Minute}
		}, 0, 0, "no function"},
		{"request bound", func(o *PlanOptions) { o.MaxRequests = 20 }, 0, 0, "more than 20 requests"},
		{"bad speed", func(o *PlanOptions) { o.Speed = 0 }, 0, 0, "speed"},
		{"bad spread", func(o *PlanOptions) { o.Spread = "poisson" }, 0, 0, "spread"},
		{"no functions", func(o *PlanOptions) { o.Functions = 0 }, 0, 0, "functions 0"},
		{"bad window", func(o *PlanOptions) { o.Window = trace.Window{From: time.Hour, To: time.Minute} }, 0, 0, "window"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := planOptions(dir)
			tc.edit(&o)
			p, err := BuildPlan(o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Functions) != tc.fns || p.Skipped != tc.skipped {
				t.Errorf("%d functions, %d skipped; want %d, %d", len(p.Functions), p.Skipped, tc.fns, tc.skipped)
			}
		})
	}
}

func TestLabPolicies(t *testing.T) {
	pols, err := ParsePolicies("upstream,fixed-10m,learned", keepalive.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		speed                    float64
		window, grace, retention time.Duration // upstream's window and grace; fixed-10m's retention
		clamped                  int
	}{
		{1, time.Minute, 30 * time.Second, 10 * time.Minute, 0},
		{5, 12 * time.Second, 6 * time.Second, 2 * time.Minute, 0},
		{10, 6 * time.Second, 6 * time.Second, time.Minute, 1},
		{12, 6 * time.Second, 6 * time.Second, 50 * time.Second, 2},
	}
	for _, tc := range tests {
		lps, err := LabPolicies(pols, tc.speed)
		if err != nil {
			t.Fatal(err)
		}
		up, fixed, learned := lps[0], lps[1], lps[2]
		if up.Window != tc.window || up.Grace != tc.grace || up.Retention != 0 || len(up.Clamped) != tc.clamped {
			t.Errorf("speed %g upstream %+v: want window %v grace %v, %d clamped", tc.speed, up, tc.window, tc.grace, tc.clamped)
		}
		if fixed.Retention != tc.retention || fixed.Annotations()[RetentionAnnotation] != tc.retention.String() {
			t.Errorf("speed %g fixed-10m retention %v (%v), want %v", tc.speed, fixed.Retention, fixed.Annotations(), tc.retention)
		}
		if !learned.Thaw() || learned.Annotations()[KeepAliveAnnotation] != "learned" || up.Thaw() || fixed.Thaw() {
			t.Errorf("speed %g: learned %+v", tc.speed, learned)
		}
		if a := up.Annotations(); a[WindowAnnotation] != tc.window.String() || len(a) != 1 {
			t.Errorf("speed %g upstream annotations %v", tc.speed, a)
		}
		if w := fixed.Wall(); w.Grace != tc.grace || w.Retention != tc.retention || fixed.Config().StableWindow != tc.window {
			t.Errorf("speed %g fixed-10m wall policy %+v, window %v", tc.speed, w, fixed.Config().StableWindow)
		}
		if learned.Wall().Learned == nil {
			t.Errorf("speed %g: learned's wall policy lost its config", tc.speed)
		}
	}
	if _, err := LabPolicies(pols, 0); err == nil {
		t.Error("speed 0: no error")
	}
	odd := []sim.Policy{sim.Upstream(), {Name: "fixed-x", Grace: time.Minute}}
	if _, err := LabPolicies(odd, 1); err == nil || !strings.Contains(err.Error(), "grace") {
		t.Errorf("two grace periods: %v, want an error", err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		header string
		ready  int
		cold   bool
		by     string
	}{
		{"cold", 1, true, ByHeader}, // the activator knows better than a lagging watch
		{"warm", 0, false, ByHeader},
		{"", 0, true, ByPods},
		{"", 2, false, ByPods},
	}
	for _, tc := range tests {
		o := Outcome{Header: tc.header, ReadyPods: tc.ready}
		o.classify()
		if o.Cold != tc.cold || o.ColdBy != tc.by {
			t.Errorf("header %q ready %d: cold %v by %s, want %v by %s", tc.header, tc.ready, o.Cold, o.ColdBy, tc.cold, tc.by)
		}
	}
}

func TestBusy(t *testing.T) {
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		iv   [][2]time.Time
		want time.Duration
	}{
		{nil, 0},
		{[][2]time.Time{{at(0), at(1)}}, time.Second},
		{[][2]time.Time{{at(2), at(3)}, {at(0), at(1)}}, 2 * time.Second},
		{[][2]time.Time{{at(0), at(2)}, {at(1), at(3)}}, 3 * time.Second},
		{[][2]time.Time{{at(0), at(4)}, {at(1), at(2)}}, 4 * time.Second},
	}
	for i, tc := range tests {
		if got := busy(tc.iv); got != tc.want {
			t.Errorf("case %d: busy %v, want %v", i, got, tc.want)
		}
	}
}

func testPlan(t *testing.T) *Plan {
	t.Helper()
	p, err := BuildPlan(planOptions(writeTrace(t)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRows(t *testing.T) {
	p := testPlan(t)
	outs := []Outcome{
		{Side: "thaw", Policy: "upstream", Fn: 0, Sent: t0, Sleep: 100 * time.Millisecond, Latency: 1100 * time.Millisecond, Status: 200, Header: "cold"},
		{Side: "thaw", Policy: "upstream", Fn: 0, Sent: t0.Add(2 * time.Second), Sleep: 100 * time.Millisecond, Latency: 100 * time.Millisecond, Status: 200, Header: "warm"},
		{Side: "thaw", Policy: "upstream", Fn: 1, Sent: t0, Sleep: 10 * time.Millisecond, Latency: 500 * time.Millisecond, Status: 502},
	}
	for i := range outs {
		outs[i].classify()
	}
	pods := map[runKey][]PodStats{{"thaw", "upstream"}: {{ScaleUps: 1, PodSeconds: 10}, {ScaleUps: 2, PodSeconds: 0.2}}}
	rows := Rows(p, outs, pods)
	if len(rows) != 2 {
		t.Fatalf("%d rows, want one per function", len(rows))
	}
	r0, r1 := rows[0], rows[1]
	if r0.Policy != "thaw/upstream" || r0.Function != p.Functions[0].Name || r0.Requests != 2 || r0.ColdRequests != 1 ||
		r0.ColdStarts != 1 || r0.AddedLatency != time.Second || math.Abs(r0.IdlePodSeconds-8.8) > 1e-9 {
		t.Errorf("row 0 %+v", r0)
	}
	// No header, no ready pod: cold by the pods; the pod time is less than
	// the busy time: no idle time.
	if r1.Requests != 1 || r1.ColdRequests != 1 || r1.ColdStarts != 2 || r1.IdlePodSeconds != 0 {
		t.Errorf("row 1 %+v", r1)
	}
}

func TestCompare(t *testing.T) {
	p := testPlan(t)
	pols, _ := ParsePolicies("upstream,fixed-10m,learned", keepalive.DefaultConfig())
	lps, err := LabPolicies(pols, p.Speed)
	if err != nil {
		t.Fatal(err)
	}
	cold := 800 * time.Millisecond
	// A cluster that behaves as the simulation: its rows are the
	// simulation's (thaw side), and twice its cold starts (upstream side).
	var lab []report.Row
	for _, side := range []string{"upstream", "thaw"} {
		for _, lp := range lps {
			if lp.Thaw() && side == "upstream" {
				continue
			}
			rows, err := SimulatePlan(p, side+"/"+lp.Name, lp.Wall(), sim.Model{ColdStart: cold, Config: lp.Config()}, true)
			if err != nil {
				t.Fatal(err)
			}
			for i := range rows {
				rows[i].ColdStarts += rows[i].PreWarms
				rows[i].PreWarms = 0
				if side == "upstream" {
					rows[i].ColdStarts *= 2
				}
			}
			lab = append(lab, rows...)
		}
	}
	// One failed request of thaw/fixed-10m.
	outs := []Outcome{{Side: "thaw", Policy: "fixed-10m", Status: 503}}
	cmp, simRows, err := Compare(p, []string{"upstream", "thaw"}, lps, outs, lab, CompareOptions{Cold: cold, TraceCold: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(cmp) != 5 {
		t.Fatalf("%d comparisons, want 2 upstream + 3 thaw: %+v", len(cmp), cmp)
	}
	for _, c := range cmp {
		wantOK := c.Side == "thaw" && c.Policy != "fixed-10m"
		if c.OK != wantOK || c.ColdStart != cold || c.SimColdStarts == 0 || c.TraceColdStarts == 0 {
			t.Errorf("%s/%s: %+v, want ok %v", c.Side, c.Policy, c, wantOK)
		}
		if c.Side == "thaw" && (c.StartsDiff != 0 || c.RequestsDiff != 0) {
			t.Errorf("%s/%s: differences %v, %v with the simulation's own figures", c.Side, c.Policy, c.StartsDiff, c.RequestsDiff)
		}
		if c.Side == "upstream" && c.StartsDiff != 1 {
			t.Errorf("%s/%s: difference %v, want +100%%", c.Side, c.Policy, c.StartsDiff)
		}
	}
	// Simulations of both sides on the wall clock, and one trace-time
	// simulation per policy.
	labels := map[string]int{}
	for _, r := range simRows {
		labels[r.Policy]++
	}
	if len(labels) != 8 || labels["trace/learned"] != len(p.Functions) || labels["sim:thaw/learned"] != len(p.Functions) {
		t.Errorf("simulation rows by label %v", labels)
	}
	var buf bytes.Buffer
	if err := WriteComparisonTable(&buf, cmp); err != nil || !strings.Contains(buf.String(), "within 10%") {
		t.Errorf("table %q, %v", buf.String(), err)
	}
	buf.Reset()
	if err := WriteComparisonCSV(&buf, cmp); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(recs) != 6 || recs[0][0] != "side" || recs[1][1] != "upstream" || recs[len(recs)-1][15] != "true" {
		t.Errorf("comparison CSV %v, %v", recs, err)
	}
}

func TestColdStartTime(t *testing.T) {
	outs := []Outcome{
		{Status: 200, Cold: true, Replicas: 0, Sleep: time.Second, Latency: 2 * time.Second},
		{Status: 200, Cold: true, Replicas: 0, Sleep: 0, Latency: 3 * time.Second},
		{Status: 200, Cold: true, Replicas: 0, Sleep: 0, Latency: 900 * time.Millisecond},
		{Status: 200, Cold: true, Replicas: 1, Sleep: 0, Latency: 100 * time.Millisecond}, // joined a cold start
		{Status: 502, Cold: true, Replicas: 0, Sleep: 0, Latency: 10 * time.Second},       // failed
		{Status: 200, Cold: false, Replicas: 0, Sleep: 0, Latency: 10 * time.Second},      // warm
	}
	if d, ok := ColdStartTime(outs); !ok || d != time.Second {
		t.Errorf("cold-start time %v %v, want the median of 1s, 3s, 0.9s", d, ok)
	}
	if _, ok := ColdStartTime(outs[3:]); ok {
		t.Error("no request started a cold start: want none")
	}
}

func TestWriteOutcomesCSV(t *testing.T) {
	p := testPlan(t)
	outs := []Outcome{
		{Side: "thaw", Policy: "upstream", Fn: 1, Service: "p0-f001", Arrival: 3, Sent: t0, Sleep: 10 * time.Millisecond,
			Latency: 1500 * time.Millisecond, Status: 200, Header: "cold", Replicas: 0},
		{Side: "upstream", Policy: "upstream", Fn: 0, Service: "p0-f000", Error: "dial tcp: refused"},
	}
	for i := range outs {
		outs[i].classify()
	}
	var buf bytes.Buffer
	if err := WriteOutcomesCSV(&buf, p, outs); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(recs) != 3 {
		t.Fatalf("%v, %v", recs, err)
	}
	h := map[string]int{}
	for i, c := range recs[0] {
		h[c] = i
	}
	if r := recs[1]; r[h["function"]] != p.Functions[1].Name || r[h["waited_ms"]] != "1490.000" || r[h["cold"]] != "true" || r[h["cold_by"]] != ByHeader {
		t.Errorf("row %v", r)
	}
	if r := recs[2]; r[h["sent_unix_ns"]] != "" || r[h["error"]] != "dial tcp: refused" || r[h["cold_by"]] != ByPods {
		t.Errorf("row %v", r)
	}
}

func pod(uid, rev string, ready, terminating bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Name: uid, Labels: map[string]string{revisionLabel: rev}}}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	if terminating {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	return p
}

func deployment(name string, n int32) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.DeploymentSpec{Replicas: &n}}
}

func TestPodWatch(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	w := &podWatch{clk: clk, ready: map[string]map[types.UID]bool{}, replicas: map[string]int32{},
		scaleUps: map[string][]time.Time{}, spans: map[types.UID]*podSpan{}}
	const rev, dep = "r-1", "r-1-deployment"
	w.onDeployment(deployment(dep, 1)) // created at one pod: not a scale-up from zero
	w.onPod(pod("a", rev, true, false), false)
	clk.Step(10 * time.Second)
	w.onDeployment(deployment(dep, 0))
	w.onPod(pod("a", rev, true, true), false) // terminating: no longer takes requests
	if ok, why := w.AtZero(rev, dep); !ok || w.Ready(rev) != 0 {
		t.Fatalf("at zero %v (%s), %d ready", ok, why, w.Ready(rev))
	}
	clk.Step(time.Minute)
	w.onDeployment(deployment(dep, 1))
	w.onPod(pod("b", rev, false, false), false)
	if ok, _ := w.AtZero(rev, dep); ok || w.Ready(rev) != 0 || w.Replicas(dep) != 1 {
		t.Fatalf("scaling up: ready %d, replicas %d", w.Ready(rev), w.Replicas(dep))
	}
	clk.Step(time.Second)
	w.onPod(pod("b", rev, true, false), false)
	if w.Ready(rev) != 1 {
		t.Fatalf("ready %d, want 1", w.Ready(rev))
	}
	clk.Step(5 * time.Second)
	w.onPod(pod("b", rev, true, false), true) // deleted
	end := clk.Now()
	if n := w.ScaleUps(dep, t0, end); n != 1 {
		t.Errorf("%d scale-ups from zero, want 1", n)
	}
	if n := w.ScaleUps(dep, t0.Add(2*time.Minute), end); n != 0 {
		t.Errorf("%d scale-ups after the one, want 0", n)
	}
	// a: 10 s; b: 5 s; within [5 s, end]: 5 + 5.
	if s := w.PodSeconds(rev, t0, end); s != 15 {
		t.Errorf("pod-seconds %v, want 15", s)
	}
	if s := w.PodSeconds(rev, t0.Add(5*time.Second), end); s != 10 {
		t.Errorf("pod-seconds from 5 s %v, want 10", s)
	}
	if w.Replicas("other") != -1 {
		t.Error("an unseen Deployment has replicas")
	}
}

func TestColdStartCurve(t *testing.T) {
	p := testPlan(t)
	if len(p.Arrivals) < 4 {
		t.Fatalf("test plan has %d arrivals", len(p.Arrivals))
	}
	step := p.Arrivals[len(p.Arrivals)-1].At/4 + time.Millisecond
	bin := func(i int) int { return int(p.Arrivals[i].At / step) }
	first, last := 0, len(p.Arrivals)-1
	cold := func(arrival int, wait time.Duration) Outcome {
		return Outcome{Arrival: arrival, Status: 200, Cold: true, Latency: wait}
	}
	outs := []Outcome{
		cold(first, 30*time.Second),
		cold(first, 10*time.Second),
		cold(first, 20*time.Second),
		cold(last, 2*time.Second),
		{Arrival: last, Status: 200, Cold: true, Replicas: 1, Latency: time.Minute},   // joined a cold start
		{Arrival: last, Status: 503, Cold: true, Latency: time.Minute},                // failed
		{Arrival: len(p.Arrivals) + 5, Status: 200, Cold: true, Latency: time.Minute}, // not in the plan
	}
	curve := ColdStartCurve(p, outs, step)
	if curve == nil {
		t.Fatal("no curve")
	}
	if bin(first) == bin(last) {
		t.Fatalf("first and last arrivals in one step")
	}
	tests := []struct {
		at   time.Duration
		want time.Duration
	}{
		{p.Arrivals[first].At, 20 * time.Second}, // median of its step
		{p.Arrivals[last].At, 2 * time.Second},
		{-time.Second, 20 * time.Second},                       // before the run: the first step
		{p.Arrivals[last].At + time.Hour, 2 * time.Second},     // after: the last
		{time.Duration(bin(first)+1) * step, 20 * time.Second}, // an empty step next to the first
	}
	for _, tc := range tests {
		if got := curve(tc.at); got != tc.want {
			t.Errorf("at %v: %v, want %v", tc.at, got, tc.want)
		}
	}
	if ColdStartCurve(p, outs[4:], step) != nil {
		t.Error("a curve without a request that started a cold start")
	}
	if ColdStartCurve(p, outs, 0) != nil {
		t.Error("a curve with no step")
	}
}

func TestReadRun(t *testing.T) {
	p := testPlan(t)
	var outs []Outcome
	for i, a := range p.Arrivals {
		o := Outcome{Side: "thaw", Policy: "upstream", Fn: a.Fn, Arrival: i, Service: fmt.Sprintf("p0-f%03d", a.Fn),
			Sent: t0.Add(a.At), Sleep: a.Sleep, Latency: a.Sleep + time.Duration(i%3)*time.Second, Status: 200}
		if i%3 == 0 {
			o.Header = "cold"
		}
		if i == 1 {
			o.Status, o.Error = 0, "dial tcp: refused"
		}
		o.classify()
		outs = append(outs, o)
	}
	pods := map[runKey][]PodStats{{"thaw", "upstream"}: make([]PodStats, len(p.Functions))}
	for i := range p.Functions {
		pods[runKey{"thaw", "upstream"}][i] = PodStats{ScaleUps: i + 1, PodSeconds: float64(10 * (i + 1))}
	}
	want := Rows(p, outs, pods)
	sims, err := SimulatePlan(p, "sim:thaw/upstream", sim.Upstream(), sim.Model{ColdStart: time.Second}, true)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var req, rows bytes.Buffer
	if err := WriteOutcomesCSV(&req, p, outs); err != nil {
		t.Fatal(err)
	}
	if err := report.WriteRowsCSV(&rows, append(append([]report.Row{}, want...), sims...)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "requests.csv"), req.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "replay.csv"), rows.Bytes(), 0o644)
	res, err := ReadRun(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Sides) != 1 || res.Sides[0] != "thaw" || len(res.Outcomes) != len(outs) {
		t.Fatalf("read %v sides, %d outcomes", res.Sides, len(res.Outcomes))
	}
	got := res.Rows(p)
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Policy != w.Policy || g.Requests != w.Requests || g.ColdRequests != w.ColdRequests || g.ColdStarts != w.ColdStarts ||
			math.Abs(g.IdlePodSeconds-w.IdlePodSeconds) > 1e-3 || (g.AddedLatency-w.AddedLatency).Abs() > time.Millisecond*time.Duration(w.Requests) {
			t.Errorf("row %d: read back %+v, want %+v", i, g, w)
		}
	}

	// Bad files: a line and a reason, no panic.
	recs, err := csv.NewReader(bytes.NewReader(req.Bytes())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]int{}
	for i, c := range recs[0] {
		h[c] = i
	}
	// with returns the header and the first request with column c set to v.
	with := func(c, v string) string {
		r := append([]string{}, recs[1]...)
		r[h[c]] = v
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		w.Write(recs[0])
		w.Write(r)
		w.Flush()
		return b.String()
	}
	other := firstArrival(p, (recs[1][h["function"]] == p.Functions[0].Name))
	bad := []struct{ name, requests, want string }{
		{"unknown function", with("function", "nope"), `requests.csv:2: function "nope" is not in the plan`},
		{"arrival of another function", with("arrival", fmt.Sprint(other)), "is not one of function"},
		{"garbage number", with("status", "twohundred"), "status"},
		{"missing column", "side,policy,service,header,error,cold_by\nthaw,upstream,x,,,\n", `no column "function"`},
		{"empty", strings.Split(req.String(), "\n")[0] + "\n", "no request"},
	}
	for _, tc := range bad {
		os.WriteFile(filepath.Join(dir, "requests.csv"), []byte(tc.requests), 0o644)
		if _, err := ReadRun(dir, p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// firstArrival is the plan's first arrival of function fn (0 or 1).
func firstArrival(p *Plan, one bool) int {
	fn := 0
	if one {
		fn = 1
	}
	for i, a := range p.Arrivals {
		if a.Fn == fn {
			return i
		}
	}
	return -1
}
