package collector

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktest "k8s.io/utils/clock/testing"

	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/autoscaler/metrics"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/wire"
)

var key = types.NamespacedName{Namespace: "ns", Name: "rev"}

func metric(stable, panic time.Duration, algo, target string) *autoscalingv1alpha1.Metric {
	m := &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec:       autoscalingv1alpha1.MetricSpec{StableWindow: stable, PanicWindow: panic, ScrapeTarget: target},
	}
	if algo != "" {
		m.Annotations = map[string]string{autoscaling.MetricAggregationAlgorithmKey: algo}
	}
	return m
}

func randStat(r *rand.Rand) wire.Stat {
	s := wire.Stat{PodName: "activator-x"}
	if r.IntN(5) == 0 {
		return s // an empty report
	}
	s.AverageConcurrentRequests = r.Float64() * 50
	s.RequestCount = float64(r.IntN(300))
	if r.IntN(3) == 0 {
		s.AverageProxiedConcurrentRequests = r.Float64() * s.AverageConcurrentRequests
		s.ProxiedRequestCount = float64(r.IntN(int(s.RequestCount) + 1))
	}
	return s
}

func upStat(s wire.Stat) metrics.Stat {
	return metrics.Stat{PodName: s.PodName, AverageConcurrentRequests: s.AverageConcurrentRequests,
		AverageProxiedConcurrentRequests: s.AverageProxiedConcurrentRequests, RequestCount: s.RequestCount,
		ProxiedRequestCount: s.ProxiedRequestCount, ProcessUptime: s.ProcessUptime, Timestamp: s.Timestamp}
}

func sameBits(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// TestDifferentialCollector feeds Thaw's collector and upstream's the same
// stat streams and compares what the decider would read at every step.
func TestDifferentialCollector(t *testing.T) {
	logger := zap.NewNop().Sugar()
	for seed := range uint64(400) {
		r := rand.New(rand.NewPCG(seed, 0x636f6c6c))
		stable := time.Duration(6+r.IntN(120)) * time.Second
		pnc := time.Duration(float64(stable) * (0.01 + r.Float64()*0.99))
		algo := []string{"", autoscaling.MetricAggregationAlgorithmLinear,
			autoscaling.MetricAggregationAlgorithmWeightedExponential,
			autoscaling.MetricAggregationAlgorithmWeightedExponentialAlt}[r.IntN(4)]
		target := []string{"", "rev-private"}[r.IntN(2)]
		m := metric(stable, pnc, algo, target)

		up := metrics.NewMetricCollector(func(*autoscalingv1alpha1.Metric, *zap.SugaredLogger) (metrics.StatsScraper, error) {
			return nil, nil
		}, logger)
		if err := up.CreateOrUpdate(m); err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1_700_000_000+r.Int64N(1_000_000), r.Int64N(1e9))
		mine := New(Options{Clock: clocktest.NewFakeClock(now), MaxFutureSkew: -1})
		if err := mine.CreateOrUpdate(key, ConfigFromMetric(m)); err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			switch r.IntN(10) {
			case 0:
				now = now.Add(time.Duration(r.Int64N(int64(2 * stable))))
			default:
				now = now.Add(time.Duration(r.Int64N(int64(1500 * time.Millisecond))))
			}
			for range r.IntN(4) { // the scraper and a few activators
				s := randStat(r)
				mine.Record(key, now, s)
				up.Record(key, now, upStat(s))
			}
			q := now.Add(time.Duration(r.Int64N(int64(3 * time.Second))))
			for _, rps := range []bool{false, true} {
				var gs, gp, ws, wp float64
				var gerr, werr error
				if rps {
					gs, gp, gerr = mine.StableAndPanicRPS(key, q)
					ws, wp, werr = up.StableAndPanicRPS(key, q)
				} else {
					gs, gp, gerr = mine.StableAndPanicConcurrency(key, q)
					ws, wp, werr = up.StableAndPanicConcurrency(key, q)
				}
				if !sameBits(gs, ws) || !sameBits(gp, wp) || (gerr == nil) != (werr == nil) ||
					(gerr != nil && gerr.Error() != werr.Error()) {
					t.Fatalf("seed %d step %d rps=%v algo=%q target=%q: thaw (%v, %v, %v), upstream (%v, %v, %v)",
						seed, i, rps, algo, target, gs, gp, gerr, ws, wp, werr)
				}
			}
		}
		up.Delete(key.Namespace, key.Name)
	}
}

func TestNoData(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		target  string
		record  bool
		at      time.Duration
		wantErr error
	}{
		{"scrape target, never written", "svc", false, 0, ErrNoData},
		{"scrape target, written", "svc", true, time.Second, nil},
		{"scrape target, a whole window ago", "svc", true, 61 * time.Second, ErrNoData},
		{"no scrape target means zero", "", false, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{Clock: clocktest.NewFakeClock(t0)})
			if err := c.CreateOrUpdate(key, Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second, ScrapeTarget: tc.target}); err != nil {
				t.Fatal(err)
			}
			if tc.record {
				c.Record(key, t0, wire.Stat{AverageConcurrentRequests: 3})
			}
			_, _, err := c.StableAndPanicConcurrency(key, t0.Add(tc.at))
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestRecordSubtractsProxied(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := New(Options{Clock: clocktest.NewFakeClock(t0)})
	if err := c.CreateOrUpdate(key, Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// A scraper stat and an activator stat in the same second are summed.
	c.Record(key, t0, wire.Stat{AverageConcurrentRequests: 10, AverageProxiedConcurrentRequests: 4, RequestCount: 20, ProxiedRequestCount: 5})
	c.Record(key, t0.Add(500*time.Millisecond), wire.Stat{AverageConcurrentRequests: 4, RequestCount: 5})
	s, p, err := c.StableAndPanicConcurrency(key, t0)
	if err != nil || s != 10 || p != 10 {
		t.Errorf("concurrency = %v, %v, %v; want 10, 10, nil", s, p, err)
	}
	s, p, err = c.StableAndPanicRPS(key, t0)
	if err != nil || s != 20 || p != 20 {
		t.Errorf("rps = %v, %v, %v; want 20, 20, nil", s, p, err)
	}
}

func TestDrops(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := New(Options{Clock: clocktest.NewFakeClock(t0), Logger: zaptest.NewLogger(t).Sugar()})
	if err := c.CreateOrUpdate(key, Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second}); err != nil {
		t.Fatal(err)
	}
	c.Record(types.NamespacedName{Namespace: "ns", Name: "unknown"}, t0, wire.Stat{AverageConcurrentRequests: 1})
	c.Record(key, t0, wire.Stat{AverageConcurrentRequests: math.NaN()})
	c.Record(key, t0, wire.Stat{RequestCount: math.Inf(1)})
	c.Record(key, t0.Add(time.Hour), wire.Stat{AverageConcurrentRequests: 1})
	c.Record(key, t0, wire.Stat{AverageConcurrentRequests: 2})
	if got, want := c.Drops(), (Drops{UnknownRevision: 1, Invalid: 3}); got != want {
		t.Errorf("Drops = %+v, want %+v", got, want)
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d, an unknown key must not create a collection", c.Len())
	}
	if s, _, _ := c.StableAndPanicConcurrency(key, t0); s != 2 {
		t.Errorf("stable = %v, want 2 (garbage must not reach the window)", s)
	}
}

func TestUpdateResizesAndDelete(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	clk := clocktest.NewFakeClock(t0.Add(9 * time.Second))
	c := New(Options{Clock: clk})
	cfg := Config{StableWindow: 10 * time.Second, PanicWindow: 2 * time.Second}
	if err := c.CreateOrUpdate(key, cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		c.Record(key, t0.Add(time.Duration(i)*time.Second), wire.Stat{AverageConcurrentRequests: float64(i)})
	}
	at := t0.Add(9 * time.Second)
	if s, p, _ := c.StableAndPanicConcurrency(key, at); s != 4.5 || p != 8.5 {
		t.Fatalf("before resize: %v, %v; want 4.5, 8.5", s, p)
	}
	cfg.StableWindow, cfg.PanicWindow = 4*time.Second, 4*time.Second
	if err := c.CreateOrUpdate(key, cfg); err != nil {
		t.Fatal(err)
	}
	// Shrinking keeps the newest 4 seconds (6, 7, 8, 9); growing keeps what
	// the old window had (8, 9).
	if s, p, _ := c.StableAndPanicConcurrency(key, at); s != 7.5 || p != 8.5 {
		t.Errorf("after resize: %v, %v; want 7.5, 8.5", s, p)
	}
	c.Delete(key)
	if _, _, err := c.StableAndPanicConcurrency(key, at); !errors.Is(err, ErrNotCollecting) {
		t.Errorf("after delete err = %v, want ErrNotCollecting", err)
	}
}

type fakeScraper struct {
	mu    sync.Mutex
	stat  wire.Stat
	err   error
	calls int
}

func (f *fakeScraper) Scrape(context.Context, time.Duration) (wire.Stat, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.stat, f.err
}

func (f *fakeScraper) set(s wire.Stat, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stat, f.err = s, err
}

func TestScrapeLoop(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	clk := clocktest.NewFakeClock(t0)
	fs := &fakeScraper{}
	changes := make(chan types.NamespacedName, 10)
	c := New(Options{
		Clock:    clk,
		Logger:   zaptest.NewLogger(t).Sugar(),
		Scrapers: func(types.NamespacedName, Config) (Scraper, error) { return fs, nil },
	})
	c.Watch(func(k types.NamespacedName) { changes <- k })
	t.Cleanup(c.Close)
	if err := c.CreateOrUpdate(key, Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second, ScrapeTarget: "rev-private"}); err != nil {
		t.Fatal(err)
	}
	tick := func() {
		t.Helper()
		testutil.StepWhenWaiting(t, clk, ScrapeInterval)
	}

	fs.set(wire.Stat{AverageConcurrentRequests: 7, RequestCount: 3}, nil)
	tick()
	waitFor(t, func() bool { s, _, err := c.StableAndPanicConcurrency(key, clk.Now()); return err == nil && s == 7 })

	boom := errors.New("boom")
	fs.set(wire.Stat{}, boom)
	tick()
	if k := <-changes; k != key {
		t.Errorf("OnChange(%v), want %v", k, key)
	}
	waitFor(t, func() bool { return errors.Is(c.LastError(key), boom) })
	if err := c.CreateOrUpdate(key, Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second, ScrapeTarget: "rev-private"}); !errors.Is(err, boom) {
		t.Errorf("CreateOrUpdate = %v, want the last scrape error", err)
	}

	c.Delete(key) // returns only once the loop stopped
	fs.mu.Lock()
	calls := fs.calls
	fs.mu.Unlock()
	clk.Step(5 * ScrapeInterval)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.calls != calls {
		t.Errorf("scraped after Delete")
	}
}

// waitFor polls a condition that a goroutine driven by the fake clock makes
// true; the clock itself never advances here.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, "condition", cond)
}

func TestConcurrentUse(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	c := New(Options{Clock: clocktest.NewFakeClock(t0)})
	keys := []types.NamespacedName{{Namespace: "a", Name: "1"}, {Namespace: "a", Name: "2"}}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				k := keys[(g+i)%2]
				switch i % 5 {
				case 0:
					_ = c.CreateOrUpdate(k, Config{StableWindow: time.Duration(6+i%3) * time.Second, PanicWindow: time.Second})
				case 4:
					if i%100 == 4 {
						c.Delete(k)
					}
				default:
					c.Record(k, t0.Add(time.Duration(i)*time.Millisecond), wire.Stat{AverageConcurrentRequests: 1})
					_, _, _ = c.StableAndPanicConcurrency(k, t0)
				}
			}
		})
	}
	wg.Wait()
}

func TestDropMetrics(t *testing.T) {
	c := New(Options{Clock: clocktest.NewFakeClock(time.Unix(1_700_000_000, 0))})
	c.Record(key, time.Unix(1_700_000_000, 0), wire.Stat{AverageConcurrentRequests: 1})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()+"/"+m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"thaw_collector_stats_dropped_total/unknown_revision": 1, "thaw_collector_stats_dropped_total/invalid": 0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

// TestFarFutureTimestamps: a timestamp beyond what UnixNano can hold (year
// 2262 on) must be dropped like any other too-new one; UnixNano wraps it to
// a value before the horizon, and the stat then sat in the windows for
// minutes of real stats.
func TestFarFutureTimestamps(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name     string
		at       time.Time
		wantDrop bool
	}{
		{name: "now", at: t0},
		{name: "within the skew", at: t0.Add(59 * time.Second)},
		{name: "past the skew", at: t0.Add(2 * time.Minute), wantDrop: true},
		{name: "9.3e9 s (wraps UnixNano)", at: time.Unix(9_300_000_000, 0), wantDrop: true},
		{name: "max int64 seconds", at: time.Unix(math.MaxInt64, 0), wantDrop: true},
		{name: "just past UnixNano's range", at: time.Unix(0, math.MaxInt64).Add(time.Second), wantDrop: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktest.NewFakeClock(t0)
			c := New(Options{Clock: clk})
			if err := c.CreateOrUpdate(key, Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second}); err != nil {
				t.Fatal(err)
			}
			c.Record(key, t0, wire.Stat{AverageConcurrentRequests: 1}) // primes the cached horizon
			c.Record(key, tc.at, wire.Stat{AverageConcurrentRequests: 1000})
			got := c.Drops().Invalid == 1
			if got != tc.wantDrop {
				t.Fatalf("dropped = %v, want %v", got, tc.wantDrop)
			}
			if !tc.wantDrop {
				return
			}
			// Real stats that follow read their own values only.
			for i := 1; i <= 70; i++ {
				clk.Step(time.Second)
				c.Record(key, t0.Add(time.Duration(i)*time.Second), wire.Stat{AverageConcurrentRequests: 1})
			}
			if s, p, err := c.StableAndPanicConcurrency(key, t0.Add(70*time.Second)); err != nil || s != 1 || p != 1 {
				t.Fatalf("after real stats: stable %v panic %v err %v; want 1, 1", s, p, err)
			}
		})
	}
}
