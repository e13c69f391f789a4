package multiscaler

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktest "k8s.io/utils/clock/testing"

	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/scaling"

	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// pods is the ready-pod count both sides see.
type pods struct {
	n   int
	err error
}

func (p *pods) ReadyCount() (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	return p.n, nil
}
func (p *pods) NotReadyCount() (int, error) { return 0, nil }

func randDeciderSpec(r *rand.Rand) decider.Spec {
	total := []float64{100, 10, float64(1 + r.IntN(300))}[r.IntN(3)]
	s := decider.Spec{
		MaxScaleUpRate:      []float64{1000, 2, 1.1}[r.IntN(3)],
		MaxScaleDownRate:    []float64{2, 1.5}[r.IntN(2)],
		ScalingMetric:       []string{decider.MetricConcurrency, decider.MetricRPS}[r.IntN(2)],
		TotalValue:          total,
		TargetValue:         math.Max(0.01, total*[]float64{0.7, 1, r.Float64()}[r.IntN(3)]),
		TargetBurstCapacity: []float64{200, 0, -1, r.Float64() * 300}[r.IntN(4)],
		PanicThreshold:      []float64{2, 1.5, 3}[r.IntN(3)],
		StableWindow:        time.Duration(6+r.IntN(60)) * time.Second,
		InitialScale:        int32(r.IntN(3)),
		Reachable:           r.IntN(5) != 0,
		ActivationScale:     int32([]int{0, 2, 3}[r.IntN(3)]),
	}
	if r.IntN(2) == 0 {
		s.ScaleDownDelay = time.Duration(2+r.IntN(30)) * time.Second
	}
	return s
}

// TestDifferentialStatPath drives the same stat streams through Thaw's
// collector and runner (collector → decide → status/inform) and through
// upstream's collector and autoscaler, and compares every decision. The
// runner's decide is called directly, in step with upstream's Scale.
func TestDifferentialStatPath(t *testing.T) {
	logger := zap.NewNop().Sugar()
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "endpoints"}, "x")
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 0x65326564))
		s := randDeciderSpec(r)
		m := &autoscalingv1alpha1.Metric{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			Spec: autoscalingv1alpha1.MetricSpec{StableWindow: s.StableWindow,
				PanicWindow:  time.Duration(float64(s.StableWindow) * (0.05 + r.Float64()*0.5)),
				ScrapeTarget: []string{"", "rev-private"}[r.IntN(2)]},
		}
		if r.IntN(2) == 0 {
			m.Annotations = map[string]string{autoscaling.MetricAggregationAlgorithmKey: autoscaling.MetricAggregationAlgorithmWeightedExponential}
		}
		pc := &pods{n: []int{0, 1, 3}[r.IntN(3)]}

		upColl := metrics.NewMetricCollector(func(*autoscalingv1alpha1.Metric, *zap.SugaredLogger) (metrics.StatsScraper, error) {
			return nil, nil
		}, logger)
		if err := upColl.CreateOrUpdate(m); err != nil {
			t.Fatal(err)
		}
		up := scaling.New(attribute.NewSet(), noop.NewMeterProvider(), key.Namespace, key.Name, upColl, pc, &scaling.DeciderSpec{
			MaxScaleUpRate: s.MaxScaleUpRate, MaxScaleDownRate: s.MaxScaleDownRate, ScalingMetric: s.ScalingMetric,
			TargetValue: s.TargetValue, TotalValue: s.TotalValue, TargetBurstCapacity: s.TargetBurstCapacity,
			PanicThreshold: s.PanicThreshold, StableWindow: s.StableWindow, ScaleDownDelay: s.ScaleDownDelay,
			InitialScale: s.InitialScale, Reachable: s.Reachable, ActivationScale: s.ActivationScale,
		})
		// Start Thaw's clock where upstream stamped its start-in-panic time.
		pt := reflect.ValueOf(up).Elem().FieldByName("panicTime")
		start := reflect.NewAt(pt.Type(), unsafe.Pointer(pt.UnsafeAddr())).Elem().Interface().(time.Time)
		if start.IsZero() {
			start = time.Now()
		}
		clk := clocktest.NewFakeClock(start)
		coll := collector.New(collector.Options{Clock: clk, MaxFutureSkew: -1})
		if err := coll.CreateOrUpdate(key, collector.ConfigFromMetric(m)); err != nil {
			t.Fatal(err)
		}
		ms := New(Options{Clock: clk, Metrics: coll,
			Pods: PodCounterFunc(func(types.NamespacedName) (int, error) { return pc.ReadyCount() })})
		prev := ms.Create(key, s, Labels{})
		run := ms.runners[key]
		upPanic := func() bool {
			return !reflect.NewAt(pt.Type(), unsafe.Pointer(pt.UnsafeAddr())).Elem().Interface().(time.Time).IsZero()
		}

		now := start
		for i := range 200 {
			// A few activators and the scraper report within the last second.
			for range r.IntN(4) {
				ws := wire.Stat{PodName: "p", AverageConcurrentRequests: r.Float64() * s.TargetValue * 4,
					RequestCount: float64(r.IntN(int(s.TargetValue*4) + 1))}
				if r.IntN(3) == 0 {
					ws.AverageProxiedConcurrentRequests = ws.AverageConcurrentRequests * r.Float64()
				}
				at := now.Add(-time.Duration(r.Int64N(int64(time.Second))))
				coll.Record(key, at, ws)
				upColl.Record(key, at, metrics.Stat{PodName: ws.PodName, AverageConcurrentRequests: ws.AverageConcurrentRequests,
					AverageProxiedConcurrentRequests: ws.AverageProxiedConcurrentRequests, RequestCount: ws.RequestCount})
			}
			switch r.IntN(10) {
			case 0:
				now = now.Add(time.Duration(r.Int64N(int64(time.Second)))) // a poke
			case 1:
				now = now.Add(time.Duration(r.Int64N(int64(2 * s.StableWindow)))) // a quiet spell
			default:
				now = now.Add(2 * time.Second)
			}
			clk.SetTime(now)
			pc.err = nil
			switch r.IntN(20) {
			case 0:
				pc.err = notFound
			case 1:
				pc.err = errors.New("lister down")
			}
			if r.IntN(4) == 0 {
				pc.n = max(0, pc.n+r.IntN(5)-2)
			}

			res := up.Scale(logger, now)
			changed := ms.decide(run, now)
			got := run.get()
			want, wantChanged := prev, false
			if res.ScaleValid {
				want = Status{DesiredScale: res.DesiredPodCount, ExcessBurstCapacity: res.ExcessBurstCapacity, InPanic: upPanic()}
				// Upstream informs on a new desired scale or a flipped EBC sign.
				wantChanged = prev.DesiredScale != want.DesiredScale || (prev.ExcessBurstCapacity < 0) != (want.ExcessBurstCapacity < 0)
			}
			if got != want || changed != wantChanged {
				t.Fatalf("seed %d step %d spec %+v: thaw %+v changed=%v, upstream %+v (valid %v) changed=%v",
					seed, i, s, got, changed, want, res.ScaleValid, wantChanged)
			}
			prev = got
		}
		upColl.Delete(key.Namespace, key.Name)
	}
}
