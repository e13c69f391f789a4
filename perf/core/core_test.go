package core

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktest "k8s.io/utils/clock/testing"

	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/autoscaler/aggregation"
	"knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/scaling"

	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/autoscaler/window"
	"github.com/thaw-dev/thaw/pkg/wire"
)

var t0 = time.Unix(1_700_000_000, 0)

// A typical KPA spec: container concurrency 0 → target 100 × 0.7, TBC 200,
// scale-down delay so that the max window is exercised.
var spec = decider.Spec{
	MaxScaleUpRate: 1000, MaxScaleDownRate: 2, ScalingMetric: decider.MetricConcurrency,
	TargetValue: 70, TotalValue: 100, TargetBurstCapacity: 200, PanicThreshold: 2,
	StableWindow: 60 * time.Second, ScaleDownDelay: 30 * time.Second, Reachable: true,
}

func upSpec(s decider.Spec) *scaling.DeciderSpec {
	return &scaling.DeciderSpec{
		MaxScaleUpRate: s.MaxScaleUpRate, MaxScaleDownRate: s.MaxScaleDownRate, ScalingMetric: s.ScalingMetric,
		TargetValue: s.TargetValue, TotalValue: s.TotalValue, TargetBurstCapacity: s.TargetBurstCapacity,
		PanicThreshold: s.PanicThreshold, StableWindow: s.StableWindow, ScaleDownDelay: s.ScaleDownDelay,
		Reachable: s.Reachable, InitialScale: s.InitialScale, ActivationScale: s.ActivationScale,
	}
}

// loads is a fixed pseudo-random load pattern shared by both sides.
var loads = func() []float64 {
	r := rand.New(rand.NewPCG(1, 2))
	l := make([]float64, 1024)
	for i := range l {
		l[i] = r.Float64() * 700
	}
	return l
}()

// constFeed is a metric client and pod counter returning loads in turn.
type constFeed struct{ i int }

func (f *constFeed) StableAndPanicConcurrency(types.NamespacedName, time.Time) (float64, float64, error) {
	f.i++
	v := loads[f.i&1023]
	return v, v * 1.5, nil
}

func (f *constFeed) StableAndPanicRPS(k types.NamespacedName, now time.Time) (float64, float64, error) {
	return f.StableAndPanicConcurrency(k, now)
}
func (f *constFeed) ReadyCount() (int, error)    { return 5, nil }
func (f *constFeed) NotReadyCount() (int, error) { return 0, nil }

// BenchmarkDecide is the cost of one decision from given observations.
func BenchmarkDecide(b *testing.B) {
	b.Run("impl=thaw", func(b *testing.B) {
		d := decider.New(spec, 5, t0)
		now := t0
		b.ReportAllocs()
		cpu := cpuTime()
		for i := 0; b.Loop(); i++ {
			now = now.Add(2 * time.Second)
			v := loads[i&1023]
			d.Scale(now, decider.Observation{Stable: v, Panic: v * 1.5, Ready: 5})
		}
		reportCPU(b, cpu)
	})
	b.Run("impl=upstream", func(b *testing.B) {
		f := &constFeed{}
		u := scaling.New(attribute.NewSet(), noop.NewMeterProvider(), "ns", "rev", f, f, upSpec(spec))
		logger := zap.NewNop().Sugar()
		now := t0
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			now = now.Add(2 * time.Second)
			u.Scale(logger, now)
		}
		reportCPU(b, cpu)
	})
}

// BenchmarkWindowRecord records a stat into one bucket window, ten stats a
// second (a few activators and the scraper).
func BenchmarkWindowRecord(b *testing.B) {
	for _, w := range []time.Duration{6 * time.Second, 60 * time.Second} {
		b.Run(fmt.Sprintf("window=%v/impl=thaw", w), func(b *testing.B) {
			bk := window.NewLinear(w)
			now := t0
			b.ReportAllocs()
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				now = now.Add(100 * time.Millisecond)
				bk.Record(now, loads[i&1023])
			}
			reportCPU(b, cpu)
		})
		b.Run(fmt.Sprintf("window=%v/impl=upstream", w), func(b *testing.B) {
			bk := aggregation.NewTimedFloat64Buckets(w, time.Second)
			now := t0
			b.ReportAllocs()
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				now = now.Add(100 * time.Millisecond)
				bk.Record(now, loads[i&1023])
			}
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkWindowAverage reads a full window 1 s after the last write.
func BenchmarkWindowAverage(b *testing.B) {
	for _, algo := range []string{"linear", "weighted"} {
		w := 60 * time.Second
		fill := func(rec func(time.Time, float64)) time.Time {
			now := t0
			for i := range 600 {
				now = now.Add(100 * time.Millisecond)
				rec(now, loads[i&1023])
			}
			return now.Add(time.Second)
		}
		b.Run(fmt.Sprintf("algo=%s/impl=thaw", algo), func(b *testing.B) {
			bk := window.NewLinear(w)
			if algo == "weighted" {
				bk = window.NewWeighted(w)
			}
			at := fill(bk.Record)
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				bk.Average(at)
			}
			reportCPU(b, cpu)
		})
		b.Run(fmt.Sprintf("algo=%s/impl=upstream", algo), func(b *testing.B) {
			var avg func(time.Time) float64
			var rec func(time.Time, float64)
			if algo == "weighted" {
				bk := aggregation.NewWeightedFloat64Buckets(w, time.Second)
				avg, rec = bk.WindowAverage, bk.Record
			} else {
				bk := aggregation.NewTimedFloat64Buckets(w, time.Second)
				avg, rec = bk.WindowAverage, bk.Record
			}
			at := fill(rec)
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				avg(at)
			}
			reportCPU(b, cpu)
		})
	}
}

func keyN(i int) types.NamespacedName {
	return types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("rev-%05d", i)}
}

func upMetric(k types.NamespacedName) *autoscalingv1alpha1.Metric {
	return &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: k.Name},
		Spec:       autoscalingv1alpha1.MetricSpec{StableWindow: 60 * time.Second, PanicWindow: 6 * time.Second, ScrapeTarget: k.Name + "-private"},
	}
}

func nilScraper(*autoscalingv1alpha1.Metric, *zap.SugaredLogger) (metrics.StatsScraper, error) {
	return nil, nil
}

func thawConfig(k types.NamespacedName) collector.Config {
	return collector.Config{StableWindow: 60 * time.Second, PanicWindow: 6 * time.Second, ScrapeTarget: k.Name + "-private"}
}

// BenchmarkCollectorRecord records one stat through the collector (the path
// of every stat from the stat server), among 100 revisions.
func BenchmarkCollectorRecord(b *testing.B) {
	const revs = 100
	stat := wire.Stat{AverageConcurrentRequests: 12, AverageProxiedConcurrentRequests: 2, RequestCount: 40, ProxiedRequestCount: 4}
	b.Run("impl=thaw", func(b *testing.B) {
		// The real clock, as in production: Record reads it for the skew check.
		c := collector.New(collector.Options{Clock: clock.RealClock{}})
		keys := make([]types.NamespacedName, revs)
		for i := range keys {
			keys[i] = keyN(i)
			_ = c.CreateOrUpdate(keys[i], thawConfig(keys[i]))
		}
		now := t0
		b.ReportAllocs()
		cpu := cpuTime()
		for i := 0; b.Loop(); i++ {
			now = now.Add(10 * time.Millisecond)
			c.Record(keys[i%revs], now, stat)
		}
		reportCPU(b, cpu)
	})
	b.Run("impl=upstream", func(b *testing.B) {
		c := metrics.NewMetricCollector(nilScraper, zap.NewNop().Sugar())
		keys := make([]types.NamespacedName, revs)
		for i := range keys {
			keys[i] = keyN(i)
			_ = c.CreateOrUpdate(upMetric(keys[i]))
		}
		b.Cleanup(func() {
			for _, k := range keys {
				c.Delete(k.Namespace, k.Name)
			}
		})
		us := metrics.Stat{AverageConcurrentRequests: 12, AverageProxiedConcurrentRequests: 2, RequestCount: 40, ProxiedRequestCount: 4}
		now := t0
		b.ReportAllocs()
		cpu := cpuTime()
		for i := 0; b.Loop(); i++ {
			now = now.Add(10 * time.Millisecond)
			c.Record(keys[i%revs], now, us)
		}
		reportCPU(b, cpu)
	})
}

const nRevs = 10_000

// BenchmarkRound10k decides 10,000 revisions once each, reading the window
// averages from the collector as a tick does; ns/op is one full round. Each
// round is 2 s later, with one new stat per revision recorded outside the
// timed part.
func BenchmarkRound10k(b *testing.B) {
	keys := make([]types.NamespacedName, nRevs)
	for i := range keys {
		keys[i] = keyN(i)
	}
	b.Run("impl=thaw", func(b *testing.B) {
		c := collector.New(collector.Options{Clock: clocktest.NewFakeClock(t0.Add(100 * 365 * 24 * time.Hour))})
		ds := make([]*decider.Decider, nRevs)
		for i, k := range keys {
			_ = c.CreateOrUpdate(k, thawConfig(k))
			ds[i] = decider.New(spec, 5, t0)
		}
		now := t0
		record := func() {
			for i, k := range keys {
				c.Record(k, now, wire.Stat{AverageConcurrentRequests: loads[(i+int(now.Unix()))&1023]})
			}
		}
		for range 30 {
			now = now.Add(2 * time.Second)
			record()
		}
		b.ReportAllocs()
		var cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			now = now.Add(2 * time.Second)
			record()
			b.StartTimer()
			start := cpuTime()
			for i, k := range keys {
				s, p, err := c.StableAndPanicConcurrency(k, now)
				ds[i].Scale(now, decider.Observation{Stable: s, Panic: p, Ready: 5, NoData: err != nil})
			}
			cpu += cpuTime() - start
		}
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	})
	b.Run("impl=upstream", func(b *testing.B) {
		c := metrics.NewMetricCollector(nilScraper, zap.NewNop().Sugar())
		us := make([]scaling.UniScaler, nRevs)
		pc := &constFeed{}
		for i, k := range keys {
			_ = c.CreateOrUpdate(upMetric(k))
			us[i] = scaling.New(attribute.NewSet(), noop.NewMeterProvider(), k.Namespace, k.Name, c, pc, upSpec(spec))
		}
		b.Cleanup(func() {
			for _, k := range keys {
				c.Delete(k.Namespace, k.Name)
			}
		})
		logger := zap.NewNop().Sugar()
		now := t0
		record := func() {
			for i, k := range keys {
				c.Record(k, now, metrics.Stat{AverageConcurrentRequests: loads[(i+int(now.Unix()))&1023]})
			}
		}
		for range 30 {
			now = now.Add(2 * time.Second)
			record()
		}
		b.ReportAllocs()
		var cpu time.Duration
		for b.Loop() {
			b.StopTimer()
			now = now.Add(2 * time.Second)
			record()
			b.StartTimer()
			start := cpuTime()
			for _, u := range us {
				u.Scale(logger, now)
			}
			cpu += cpuTime() - start
		}
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	})
}

// countingCollector counts reads so that the benchmark knows when a round of
// the real scheduler is complete.
type countingCollector struct {
	*collector.Collector
	n    atomic.Int64
	done chan struct{}
}

func (c *countingCollector) StableAndPanicConcurrency(k types.NamespacedName, now time.Time) (float64, float64, error) {
	s, p, err := c.Collector.StableAndPanicConcurrency(k, now)
	if c.n.Add(1) == nRevs {
		c.n.Store(0)
		c.done <- struct{}{}
	}
	return s, p, err
}

// BenchmarkScheduler10k is a full round of the real multiscaler scheduler
// over 10,000 revisions (heap, locks, collector reads, decisions, informs),
// driven by a fake clock. Upstream's multiscaler cannot be driven by a fake
// clock, so there is no upstream pair.
func BenchmarkScheduler10k(b *testing.B) {
	clk := clocktest.NewFakeClock(t0)
	cc := &countingCollector{Collector: collector.New(collector.Options{Clock: clk}), done: make(chan struct{}, 1)}
	ms := multiscaler.New(multiscaler.Options{
		Clock: clk, Metrics: cc,
		Pods:   multiscaler.PodCounterFunc(func(types.NamespacedName) (int, error) { return 5, nil }),
		Inform: func(types.NamespacedName) {},
	})
	for i := range nRevs {
		k := keyN(i)
		_ = cc.CreateOrUpdate(k, thawConfig(k))
		cc.Record(k, t0, wire.Stat{AverageConcurrentRequests: loads[i&1023]})
		ms.Create(k, spec, multiscaler.Labels{})
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = ms.Run(ctx) }()
	defer func() { cancel(); <-stopped }()
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		for !clk.HasWaiters() {
			runtime.Gosched()
		}
		clk.Step(2 * time.Second)
		<-cc.done
	}
	reportCPU(b, cpu)
}

// cpuTime returns the CPU time (user+system) of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds cpu-ns/op: on a shared machine wall time per op includes
// waiting for a core, while the target is one core's time.
func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(cpuTime()-since)/float64(b.N), "cpu-ns/op")
}
