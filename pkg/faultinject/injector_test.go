package faultinject

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)

// draws returns a Rand that yields vs in turn, then repeats the last.
func draws(vs ...float64) func() float64 {
	var mu sync.Mutex
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		v := vs[0]
		if len(vs) > 1 {
			vs = vs[1:]
		}
		return v
	}
}

type fixture struct {
	clk  *clocktesting.FakeClock
	inj  *Injector
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
}

func newFixture(t *testing.T, c Component, rnd func() float64) *fixture {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	f := &fixture{clk: clocktesting.NewFakeClock(t0), reg: prometheus.NewRegistry(), logs: logs}
	if rnd == nil {
		rnd = draws(0)
	}
	f.inj = New(Options{Component: c, Clock: f.clk, Rand: rnd, Logger: zap.New(core).Sugar(), Registerer: f.reg})
	return f
}

func (f *fixture) apply(t *testing.T, data map[string]string) {
	t.Helper()
	if err := f.inj.Apply(data); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) injected(fault Fault) float64 {
	return testutil.ToFloat64(f.inj.injected.WithLabelValues(string(fault.Component()), fault.Name()))
}

func TestFireProbabilityAndExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value string
		draws []float64
		at    time.Duration // after t0
		want  []bool
	}{
		{name: "p=1 always", value: "", draws: []float64{0.999}, want: []bool{true, true, true}},
		{name: "p=0 never", value: "p=0", draws: []float64{0}, want: []bool{false, false}},
		{name: "p=0.5 by the draw", value: "p=0.5", draws: []float64{0.1, 0.5, 0.9, 0.49}, want: []bool{true, false, false, true}},
		{name: "before until", value: "until=2026-12-03T16:00:30Z", at: 29 * time.Second, want: []bool{true}},
		{name: "at until", value: "until=2026-12-03T16:00:30Z", at: 30 * time.Second, want: []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := tc.draws
			if ds == nil {
				ds = []float64{0}
			}
			f := newFixture(t, Activator, draws(ds...))
			f.apply(t, map[string]string{string(PokeDrop): tc.value})
			f.clk.Step(tc.at)
			n := 0
			for k, want := range tc.want {
				if _, got := f.inj.fire(PokeDrop); got != want {
					t.Errorf("draw %d: fired %v, want %v", k, got, want)
				}
				if want {
					n++
				}
			}
			if got := f.injected(PokeDrop); got != float64(n) {
				t.Errorf("thaw_fault_injected_total = %v, want %d", got, n)
			}
		})
	}
}

func TestExpiryIsLoggedOnceAndActiveGauge(t *testing.T) {
	f := newFixture(t, Activator, nil)
	f.apply(t, map[string]string{string(PokeDrop): "until=2026-12-03T16:00:30Z", string(PodError): "status=503"})
	if n := testutil.CollectAndCount(f.reg, "thaw_fault_injection_active"); n != 2 {
		t.Fatalf("active faults = %d, want 2", n)
	}
	f.clk.Step(time.Minute)
	for range 3 {
		f.inj.fire(PokeDrop)
	}
	if n := f.logs.FilterMessage("Fault expired; no longer injected").Len(); n != 1 {
		t.Errorf("expiry logged %d times, want once", n)
	}
	if n := testutil.CollectAndCount(f.reg, "thaw_fault_injection_active"); n != 1 {
		t.Errorf("active faults after expiry = %d, want 1", n)
	}
	// A new setting of the same fault starts afresh.
	f.apply(t, map[string]string{string(PokeDrop): "until=2026-12-03T16:02:00Z"})
	if _, ok := f.inj.fire(PokeDrop); !ok {
		t.Error("a renewed fault is not injected")
	}
}

func TestInjectionLogIsSampled(t *testing.T) {
	f := newFixture(t, Activator, nil)
	f.apply(t, map[string]string{string(PokeDrop): ""})
	for range 100 {
		f.inj.fire(PokeDrop, "revision", "ns/rev")
	}
	f.clk.Step(DefaultLogEvery)
	f.inj.fire(PokeDrop)
	lines := f.logs.FilterMessage("Injected fault").All()
	if len(lines) != 2 {
		t.Fatalf("%d injection lines for 101 injections, want 2", len(lines))
	}
	if got := lines[1].ContextMap()["notLoggedSinceLast"]; got != int64(99) {
		t.Errorf("second line counts %v left out, want 99", got)
	}
	if got := f.injected(PokeDrop); got != 101 {
		t.Errorf("counter = %v, want 101", got)
	}
}

func TestApplyInvalidIsOneLineAndClearRemoves(t *testing.T) {
	f := newFixture(t, Activator, nil)
	err := f.inj.Apply(map[string]string{string(PodError): "status=1000", string(PodLatency): "delay=x", string(PokeDrop): ""})
	if err == nil {
		t.Fatal("no error for invalid values")
	}
	errLines := f.logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(errLines) != 1 {
		t.Fatalf("%d error lines, want 1", len(errLines))
	}
	if got := f.inj.Current(); len(got) != 1 || got[PokeDrop].Probability != 1 {
		t.Errorf("in force: %v, want only %s", got, PokeDrop)
	}
	if _, ok := f.inj.fire(PodError); ok {
		t.Error("an invalid fault was injected")
	}
	f.inj.Clear()
	if _, ok := f.inj.fire(PokeDrop); ok {
		t.Error("a cleared fault was injected")
	}
}

func TestConcurrentApplyAndFire(t *testing.T) {
	f := newFixture(t, Activator, func() float64 { return 0.3 })
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for k := range 200 {
				if w == 0 && k%10 == 0 {
					f.inj.Apply(map[string]string{string(PokeDrop): "p=0.5"})
					f.inj.Clear()
					continue
				}
				f.inj.fire(PokeDrop)
			}
		})
	}
	wg.Wait()
}

func TestOnChangeAtApplyClearAndExpiry(t *testing.T) {
	f := newFixture(t, Autoscaler, nil)
	var mu sync.Mutex
	calls := 0
	n := func() int { mu.Lock(); defer mu.Unlock(); return calls }
	f.inj.OnChange(func() { mu.Lock(); calls++; mu.Unlock() })

	f.apply(t, map[string]string{string(DecisionFreeze): "until=2026-12-03T16:00:30Z"})
	if n() != 1 {
		t.Fatalf("%d calls after Apply, want 1", n())
	}
	f.clk.Step(30 * time.Second)
	if n() != 2 {
		t.Fatalf("%d calls after the expiry, want 2", n())
	}
	// A replaced setting's expiry timer is stopped: only the new one's fires.
	f.apply(t, map[string]string{string(DecisionFreeze): "until=2026-12-03T16:01:00Z"})
	f.apply(t, map[string]string{string(DecisionFreeze): "until=2026-12-03T16:02:00Z"})
	f.clk.Step(30 * time.Second) // 16:01
	if n() != 4 {
		t.Fatalf("%d calls, want 4 (two applies, no stale expiry)", n())
	}
	f.clk.Step(time.Minute) // 16:02
	if n() != 5 {
		t.Fatalf("%d calls after the second expiry, want 5", n())
	}
	f.inj.Clear()
	if n() != 6 {
		t.Fatalf("%d calls after Clear, want 6", n())
	}
}
