package keepalive

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newPolicy(t *testing.T, cfg Config) (*Policy, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	p, err := New(cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	return p, clk
}

// feed plays requests of run each, separated by the given idle times.
func feed(p *Policy, clk *clocktesting.FakeClock, run time.Duration, idles ...time.Duration) {
	p.Busy()
	clk.Step(run)
	p.Idle()
	for _, it := range idles {
		clk.Step(it)
		p.Busy()
		clk.Step(run)
		p.Idle()
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestWindows(t *testing.T) {
	spread := make([]time.Duration, 0, 480)
	for i := range 480 {
		spread = append(spread, time.Duration(i%240)*time.Minute+30*time.Second)
	}
	tests := []struct {
		name  string
		idles []time.Duration
		want  Windows
	}{{
		name: "no history: fallback",
		want: Windows{Mode: ModeFallback, KeepAlive: 10 * time.Minute},
	}, {
		name:  "too few idle times: fallback",
		idles: repeat(10*time.Minute, 4),
		want:  Windows{Mode: ModeFallback, KeepAlive: 10 * time.Minute},
	}, {
		// Every idle time in bin 10: pre-warm 10 min less 10%, keep until
		// 11 min plus 10%.
		name:  "periodic every 10 minutes",
		idles: repeat(10*time.Minute+20*time.Second, 20),
		want:  Windows{Mode: ModeHistogram, PreWarm: 9 * time.Minute, KeepAlive: 12*time.Minute + 6*time.Second - 9*time.Minute},
	}, {
		name:  "busy: idle times under a minute keep the pod from the start",
		idles: repeat(5*time.Second, 50),
		want:  Windows{Mode: ModeHistogram, KeepAlive: 66 * time.Second},
	}, {
		// 95 in bin 2, 5 in bin 30: head 2, tail 30.
		name:  "head and tail",
		idles: append(repeat(2*time.Minute+time.Second, 95), repeat(30*time.Minute+time.Second, 5)...),
		want:  Windows{Mode: ModeHistogram, PreWarm: 108 * time.Second, KeepAlive: 31*66*time.Second - 108*time.Second},
	}, {
		name:  "spread evenly over the range: not representative",
		idles: spread,
		want:  Windows{Mode: ModeFallback, KeepAlive: 10 * time.Minute},
	}, {
		// Paper: forecast the next idle time; a window of ±15% around it.
		name:  "mostly out of bounds: forecast",
		idles: []time.Duration{5 * time.Hour, 7 * time.Hour, time.Minute},
		want: Windows{Mode: ModeForecast, PreWarm: time.Duration(float64(4*time.Hour+time.Minute/3) * 0.85),
			KeepAlive: time.Duration(float64(4*time.Hour+time.Minute/3) * 0.3)},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, clk := newPolicy(t, PaperConfig())
			if len(tc.idles) > 0 {
				feed(p, clk, time.Second, tc.idles...)
			}
			got := p.Windows()
			if got.Mode != tc.want.Mode || absDiff(got.PreWarm, tc.want.PreWarm) > time.Millisecond ||
				absDiff(got.KeepAlive, tc.want.KeepAlive) > time.Millisecond {
				t.Errorf("windows %+v, want %+v", got, tc.want)
			}
		})
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}

func TestBusyIdleIdempotent(t *testing.T) {
	p, clk := newPolicy(t, PaperConfig())
	p.Idle() // before any request: nothing
	p.Busy()
	clk.Step(time.Minute)
	p.Busy() // still busy: no idle time
	p.Idle()
	clk.Step(3 * time.Minute)
	p.Idle() // still idle: the idle period started a minute earlier stays
	clk.Step(time.Minute)
	p.Busy()
	if in, oob := p.Samples(); in != 1 || oob != 0 {
		t.Fatalf("samples %d in range, %d out: want one", in, oob)
	}
	if s := p.Snapshot(); !reflect.DeepEqual(s.Counts, [][2]uint32{{4, 1}}) {
		t.Errorf("counts %v, want one idle time of 4 minutes", s.Counts)
	}
}

func TestPlan(t *testing.T) {
	p, clk := newPolicy(t, PaperConfig())
	if pl := p.Plan(); pl.Pod || !pl.Next.IsZero() {
		t.Errorf("before any request: %+v, want no pod", pl)
	}
	// Periodic every 10 minutes: pre-warm at 9 min, keep until 12.1 min.
	feed(p, clk, time.Second, repeat(10*time.Minute+20*time.Second, 20)...)
	idle := clk.Now()
	steps := []struct {
		at   time.Duration
		pod  bool
		next time.Duration // from idle; -1 never
	}{
		{0, false, 9 * time.Minute},
		{8 * time.Minute, false, 9 * time.Minute},
		{9 * time.Minute, true, 12*time.Minute + 6*time.Second},
		{12 * time.Minute, true, 12*time.Minute + 6*time.Second},
		{12*time.Minute + 6*time.Second, false, -1},
		{time.Hour, false, -1},
	}
	for _, s := range steps {
		clk.SetTime(idle.Add(s.at))
		pl := p.Plan()
		want := time.Time{}
		if s.next >= 0 {
			want = idle.Add(s.next)
		}
		if pl.Pod != s.pod || !pl.Next.Equal(want) {
			t.Errorf("at idle+%v: pod %v next %v, want pod %v next %v", s.at, pl.Pod, pl.Next, s.pod, want)
		}
	}
	p.Busy()
	if pl := p.Plan(); !pl.Pod {
		t.Errorf("busy: %+v, want a pod", pl)
	}
}

func TestSnapshotRestore(t *testing.T) {
	p, clk := newPolicy(t, PaperConfig())
	feed(p, clk, time.Second, append(repeat(3*time.Minute, 12), 5*time.Hour, 2*time.Minute)...)
	s := p.Snapshot()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 300 {
		t.Errorf("state is %d bytes: %s", len(b), b)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	q, _ := newPolicy(t, PaperConfig())
	if err := q.Restore(back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(q.Snapshot(), s) {
		t.Errorf("restored %+v, want %+v", q.Snapshot(), s)
	}
	if q.Windows() != p.Windows() || !q.IdleSince().Equal(p.IdleSince().Truncate(time.Millisecond)) {
		t.Errorf("restored windows %+v idle %v, want %+v %v", q.Windows(), q.IdleSince(), p.Windows(), p.IdleSince())
	}
	// The restored policy goes on learning like the original.
	clk.Step(3 * time.Minute)
	p.Busy()
	q.clk = clk
	q.Busy()
	if !reflect.DeepEqual(q.Snapshot(), p.Snapshot()) {
		t.Errorf("after one more request: %+v, want %+v", q.Snapshot(), p.Snapshot())
	}

	for _, tc := range []struct {
		name string
		s    State
		msg  string
	}{
		{"version", State{Version: 2, BinSeconds: 60}, "version"},
		{"bin width", State{Version: 1, BinSeconds: 30}, "bins of 30s"},
		{"bin range", State{Version: 1, BinSeconds: 60, Counts: [][2]uint32{{240, 1}}}, "beyond"},
		{"bin twice", State{Version: 1, BinSeconds: 60, Counts: [][2]uint32{{1, 1}, {1, 2}}}, "twice"},
		{"recent", State{Version: 1, BinSeconds: 60, RecentMs: make([]int64, 9)}, "recent"},
		{"negative", State{Version: 1, BinSeconds: 60, RecentMs: []int64{-1}}, "negative"},
		{"overflow", State{Version: 1, BinSeconds: 60, Counts: [][2]uint32{{1, 1 << 31}}, OOB: 1}, "overflow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := q.Snapshot()
			err := q.Restore(tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want %q", err, tc.msg)
			}
			if !reflect.DeepEqual(q.Snapshot(), before) {
				t.Error("a failed restore changed the policy")
			}
		})
	}
}

func TestHalving(t *testing.T) {
	cfg := PaperConfig()
	cfg.HalveAt = 10
	p, clk := newPolicy(t, cfg)
	feed(p, clk, time.Second, repeat(2*time.Minute, 9)...)
	if in, _ := p.Samples(); in != 9 {
		t.Fatalf("%d samples, want 9", in)
	}
	feed(p, clk, time.Second, 2*time.Minute) // the 10th idle time halves
	if in, _ := p.Samples(); in != 5 {
		t.Errorf("%d samples after halving, want 5", in)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"range not whole bins", func(c *Config) { c.Range = 90 * time.Second }},
		{"too many bins", func(c *Config) { c.BinWidth = time.Second }},
		{"head above tail", func(c *Config) { c.Head = 0.999 }},
		{"margin", func(c *Config) { c.Margin = 1 }},
		{"oob threshold", func(c *Config) { c.OOBThreshold = 0 }},
		{"min samples", func(c *Config) { c.MinSamples = 0 }},
		{"fallback", func(c *Config) { c.Fallback.KeepAlive = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := PaperConfig()
			tc.mod(&cfg)
			if _, err := New(cfg, clocktesting.NewFakeClock(t0)); err == nil {
				t.Error("no error")
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}

func TestPlanAtAndSummary(t *testing.T) {
	p, clk := newPolicy(t, PaperConfig())
	feed(p, clk, time.Second, repeat(10*time.Minute+20*time.Second, 20)...)
	idle := clk.Now()
	// Asked a pod start ahead, the plan at 9 min shows at 8m59s.
	if pl := p.PlanAt(idle.Add(9 * time.Minute)); !pl.Pod || !pl.Next.Equal(idle.Add(12*time.Minute+6*time.Second)) {
		t.Errorf("plan at idle+9m: %+v", pl)
	}
	if pl, at := p.Plan(), p.PlanAt(clk.Now()); pl != at {
		t.Errorf("Plan %+v != PlanAt(now) %+v", pl, at)
	}
	s := p.Summary()
	if s.Mode != "histogram" || s.PreWarmSeconds != 540 || absDiff(time.Duration(s.KeepAliveSeconds*float64(time.Second)), 3*time.Minute+6*time.Second) > time.Millisecond ||
		s.IdleTimes != 20 || s.OutOfBounds != 0 {
		t.Errorf("summary %+v", s)
	}
}

func TestIdleAtAndMinIdle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		minIdle time.Duration
		pauses  []time.Duration
		want    [][2]uint32
	}{
		{"every pause", 0, []time.Duration{time.Second, 3 * time.Second, 90 * time.Second}, [][2]uint32{{0, 2}, {1, 1}}},
		{"pauses under 2 s continue the busy period", StatQuiet, []time.Duration{time.Second, 3 * time.Second, 90 * time.Second},
			[][2]uint32{{0, 1}, {1, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := PaperConfig()
			cfg.MinIdle = tc.minIdle
			p, clk := newPolicy(t, cfg)
			feed(p, clk, time.Second, tc.pauses...)
			if got := p.Snapshot().Counts; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("counts %v, want %v", got, tc.want)
			}
		})
	}
	// Dated back: the idle period starts at the last request, not when
	// it was noticed; never in the future, never unknown.
	p, clk := newPolicy(t, PaperConfig())
	p.Busy()
	last := clk.Now()
	clk.Step(StatQuiet)
	p.IdleAt(last)
	if !p.IdleSince().Equal(last) {
		t.Errorf("idle since %v, want %v", p.IdleSince(), last)
	}
	for _, at := range []time.Time{{}, clk.Now().Add(time.Hour)} {
		p.Busy()
		p.IdleAt(at)
		if !p.IdleSince().Equal(clk.Now()) {
			t.Errorf("IdleAt(%v): idle since %v, want now", at, p.IdleSince())
		}
	}
	bad := PaperConfig()
	bad.MinIdle = -1
	if bad.Validate() == nil {
		t.Error("negative MinIdle accepted")
	}
}

// Idle times replayed 12 times faster under a config scaled by 12 give the
// same windows, scaled, as the originals under the original config.
func TestTimeScaled(t *testing.T) {
	for _, base := range []Config{PaperConfig(), DefaultConfig()} {
		scaled, err := base.TimeScaled(12)
		if err != nil {
			t.Fatal(err)
		}
		idles := append(repeat(3*time.Minute+10*time.Second, 40), repeat(25*time.Minute, 6)...)
		p, clk := newPolicy(t, base)
		feed(p, clk, time.Second, idles...)
		q, qclk := newPolicy(t, scaled)
		for i := range idles {
			idles[i] /= 12
		}
		feed(q, qclk, time.Second/12, idles...)
		w, ws := p.Windows(), q.Windows()
		if w.Mode != ws.Mode || absDiff(w.PreWarm/12, ws.PreWarm) > time.Millisecond || absDiff(w.KeepAlive/12, ws.KeepAlive) > time.Millisecond {
			t.Errorf("scaled windows %+v, want %+v / 12", ws, w)
		}
		if !reflect.DeepEqual(p.Snapshot().Counts, q.Snapshot().Counts) {
			t.Errorf("counts %v, want %v", q.Snapshot().Counts, p.Snapshot().Counts)
		}
	}
	for _, s := range []int{0, -1, 7, 120} {
		if _, err := PaperConfig().TimeScaled(s); err == nil {
			t.Errorf("time scale %d accepted", s)
		}
	}
}
