package decider

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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/scaling"
)

// feed is the metric client and pod counter handed to upstream's autoscaler;
// the test sets what it returns before each step.
type feed struct {
	stable, panic float64
	metricErr     error
	ready         int
	podErr        error
	gotMetric     string
}

func (f *feed) StableAndPanicConcurrency(types.NamespacedName, time.Time) (float64, float64, error) {
	f.gotMetric = MetricConcurrency
	return f.stable, f.panic, f.metricErr
}

func (f *feed) StableAndPanicRPS(types.NamespacedName, time.Time) (float64, float64, error) {
	f.gotMetric = MetricRPS
	return f.stable, f.panic, f.metricErr
}

func (f *feed) ReadyCount() (int, error) {
	if f.podErr != nil {
		return 0, f.podErr // as the endpoints counter does
	}
	return f.ready, nil
}

func (f *feed) NotReadyCount() (int, error) { return 0, nil }

// field reads an unexported field of upstream's autoscaler behind the
// UniScaler interface, to compare panic state.
func field(u scaling.UniScaler, name string) reflect.Value {
	v := reflect.ValueOf(u).Elem().FieldByName(name)
	return reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem()
}

func toUpstream(s Spec) *scaling.DeciderSpec {
	return &scaling.DeciderSpec{
		MaxScaleUpRate: s.MaxScaleUpRate, MaxScaleDownRate: s.MaxScaleDownRate,
		ScalingMetric: s.ScalingMetric, TargetValue: s.TargetValue, TotalValue: s.TotalValue,
		TargetBurstCapacity: s.TargetBurstCapacity, ActivatorCapacity: s.ActivatorCapacity,
		PanicThreshold: s.PanicThreshold, StableWindow: s.StableWindow, ScaleDownDelay: s.ScaleDownDelay,
		InitialScale: s.InitialScale, Reachable: s.Reachable, ActivationScale: s.ActivationScale,
	}
}

func randSpec(r *rand.Rand) Spec {
	s := Spec{
		MaxScaleUpRate:   []float64{1000, 1.1, 2, 10, 1 + r.Float64()*20}[r.IntN(5)],
		MaxScaleDownRate: []float64{2, 1.5, 10, 1 + r.Float64()*5}[r.IntN(4)],
		ScalingMetric:    []string{MetricConcurrency, MetricRPS, ""}[r.IntN(3)],
		PanicThreshold:   []float64{2, 1, 10, 1 + r.Float64()*9}[r.IntN(4)],
		StableWindow:     time.Duration(6+r.IntN(120)) * time.Second,
		InitialScale:     int32(r.IntN(4)),
		Reachable:        r.IntN(4) != 0,
		ActivationScale:  int32([]int{0, 1, 2, 3, 5}[r.IntN(5)]),
	}
	total := []float64{100, 10, 1, 200, float64(1 + r.IntN(1000))}[r.IntN(5)]
	tu := []float64{0.7, 1, 0.5, r.Float64()}[r.IntN(4)]
	s.TotalValue = total
	s.TargetValue = math.Max(0.01, total*tu)
	s.TargetBurstCapacity = []float64{200, 0, -1, float64(r.IntN(500)), r.Float64() * 300}[r.IntN(5)]
	switch r.IntN(3) {
	case 0:
		s.ScaleDownDelay = 0
	case 1:
		s.ScaleDownDelay = time.Duration(1+r.IntN(60)) * time.Second
	default:
		s.ScaleDownDelay = time.Duration(r.Int64N(int64(30 * time.Second)))
	}
	return s
}

// randLoad returns a metric value: often an exact multiple of the target (to
// hit ceiling boundaries), sometimes noise, sometimes zero or a spike.
func randLoad(r *rand.Rand, target float64, ready int) float64 {
	base := float64(max(ready, 1))
	switch r.IntN(8) {
	case 0:
		return 0
	case 1:
		return target * float64(r.IntN(3*max(ready, 1)+3))
	case 2:
		return target * base * (5 + r.Float64()*20) // spike
	case 3:
		return math.Round(r.Float64()*target*base*3*1e6) / 1e6
	default:
		return r.Float64() * target * base * 2.5
	}
}

func TestDifferentialScale(t *testing.T) {
	logger := zap.NewNop().Sugar()
	errBoom := errors.New("lister failed")
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "endpoints"}, "x")
	decisions, panics, delayed := 0, 0, 0
	for seed := range uint64(4000) {
		r := rand.New(rand.NewPCG(seed, 0x6b7061))
		spec := randSpec(r)
		f := &feed{ready: []int{0, 1, 2, 5, r.IntN(50)}[r.IntN(5)]}
		up := scaling.New(attribute.NewSet(), noop.NewMeterProvider(), "ns", "rev", f, f, toUpstream(spec))
		// Upstream stamps the start-in-panic time with the wall clock; start
		// Thaw's decider at that same instant.
		start := field(up, "panicTime").Interface().(time.Time)
		if start.IsZero() {
			start = time.Now()
		}
		d := New(spec, f.ready, start)
		now := start
		for i := range 150 {
			switch r.IntN(12) {
			case 0:
				now = now.Add(time.Duration(r.Int64N(int64(time.Second)))) // poke
			case 1:
				now = now.Add(time.Duration(r.Int64N(int64(3 * spec.StableWindow))))
			default:
				now = now.Add(2 * time.Second)
			}
			if r.IntN(40) == 0 {
				spec2 := randSpec(r)
				d.Update(spec2)
				up.Update(toUpstream(spec2))
				spec = spec2
			}
			// Ready pods drift like a deployment following the decisions.
			switch r.IntN(5) {
			case 0:
				f.ready = r.IntN(60)
			case 1:
				f.ready = max(0, f.ready+r.IntN(5)-2)
			}
			f.stable = randLoad(r, spec.TargetValue, f.ready)
			f.panic = f.stable
			if r.IntN(2) == 0 {
				f.panic = randLoad(r, spec.TargetValue, f.ready)
			}
			f.metricErr, f.podErr = nil, nil
			switch r.IntN(25) {
			case 0:
				f.metricErr = metrics.ErrNoData
			case 1:
				f.podErr = notFound
			case 2:
				f.podErr = errBoom
			}

			got := up.Scale(logger, now)
			if f.podErr != nil && !apierrors.IsNotFound(f.podErr) {
				// The runner skips the decision when the pod count fails.
				if got.ScaleValid {
					t.Fatalf("seed %d step %d: upstream valid on lister error", seed, i)
				}
				continue
			}
			wantMetric := MetricConcurrency
			if spec.ScalingMetric == MetricRPS {
				wantMetric = MetricRPS
			}
			if f.gotMetric != wantMetric {
				t.Fatalf("upstream read %q, want %q", f.gotMetric, wantMetric)
			}
			ready := f.ready
			if f.podErr != nil {
				ready = 0
			}
			dec := d.Scale(now, Observation{Stable: f.stable, Panic: f.panic, Ready: ready, NoData: f.metricErr != nil})
			upPanic := !field(up, "panicTime").Interface().(time.Time).IsZero()
			upMax := field(up, "maxPanicPods").Interface().(int32)
			if dec.Valid != got.ScaleValid || dec.DesiredScale != got.DesiredPodCount ||
				dec.ExcessBurstCapacity != got.ExcessBurstCapacity || d.InPanic() != upPanic || (dec.Valid && dec.InPanic != upPanic) || d.maxPanicPods != upMax {
				t.Fatalf("seed %d step %d spec %+v obs stable=%v panic=%v ready=%d:\n thaw     %+v maxPanic=%d\n upstream %+v panic=%v maxPanic=%d",
					seed, i, spec, f.stable, f.panic, ready, dec, d.maxPanicPods, got, upPanic, upMax)
			}
			decisions++
			if dec.InPanic {
				panics++
			}
			if d.delay != nil && dec.DesiredScale > 0 {
				delayed++
			}
		}
	}
	// The random streams must exercise the interesting paths.
	if panics < decisions/20 || delayed == 0 {
		t.Errorf("poor coverage: %d decisions, %d in panic, %d with delay", decisions, panics, delayed)
	}
	t.Logf("%d decisions, %d in panic", decisions, panics)
}

func TestScale(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	base := Spec{MaxScaleUpRate: 1000, MaxScaleDownRate: 2, ScalingMetric: MetricConcurrency,
		TargetValue: 10, TotalValue: 100, TargetBurstCapacity: 200, PanicThreshold: 2,
		StableWindow: 60 * time.Second, Reachable: true}
	tests := []struct {
		name  string
		spec  func(*Spec)
		ready int
		obs   Observation
		want  Decision
	}{
		{"no data is invalid", nil, 1, Observation{NoData: true}, Decision{}},
		{"stable", nil, 1, Observation{Stable: 15, Panic: 15, Ready: 1}, Decision{DesiredScale: 2, ExcessBurstCapacity: -115, Valid: true, InPanic: true}},
		{"scale down limited by rate", nil, 1, Observation{Stable: 0, Panic: 0, Ready: 10}, Decision{DesiredScale: 5, ExcessBurstCapacity: 800, Valid: true}},
		{"unreachable may go to zero", func(s *Spec) { s.Reachable = false }, 1, Observation{Ready: 10}, Decision{DesiredScale: 0, ExcessBurstCapacity: 800, Valid: true}},
		{"scale up limited by rate", func(s *Spec) { s.MaxScaleUpRate = 2 }, 1, Observation{Stable: 100, Panic: 30, Ready: 2}, Decision{DesiredScale: 4, ExcessBurstCapacity: -30, Valid: true}},
		{"activation scale", func(s *Spec) { s.ActivationScale = 3 }, 0, Observation{Stable: 1, Panic: 1, Ready: 0}, Decision{DesiredScale: 3, ExcessBurstCapacity: -201, Valid: true}},
		{"tbc 0", func(s *Spec) { s.TargetBurstCapacity = 0 }, 1, Observation{Stable: 10, Panic: 10, Ready: 1}, Decision{DesiredScale: 1, Valid: true}},
		{"tbc -1", func(s *Spec) { s.TargetBurstCapacity = -1 }, 1, Observation{Stable: 10, Panic: 10, Ready: 1}, Decision{DesiredScale: 1, ExcessBurstCapacity: -1, Valid: true}},
		{"rps", func(s *Spec) { s.ScalingMetric = MetricRPS }, 1, Observation{Stable: 21, Panic: 21, Ready: 3}, Decision{DesiredScale: 3, ExcessBurstCapacity: 79, Valid: true}},
		{"restart starts in panic at ready", nil, 5, Observation{Stable: 0, Panic: 0, Ready: 5}, Decision{DesiredScale: 5, ExcessBurstCapacity: 300, Valid: true, InPanic: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			if tc.spec != nil {
				tc.spec(&s)
			}
			d := New(s, tc.ready, t0)
			if got := d.Scale(t0.Add(2*time.Second), tc.obs); got != tc.want {
				t.Errorf("Scale = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPanicLifecycle(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := Spec{MaxScaleUpRate: 1000, MaxScaleDownRate: 2, TargetValue: 10, TotalValue: 10,
		PanicThreshold: 2, StableWindow: 10 * time.Second, Reachable: true}
	d := New(s, 1, t0)
	steps := []struct {
		at          time.Duration
		stable, pnc float64
		ready       int
		want        int32
		wantInPanic bool
	}{
		{2 * time.Second, 10, 10, 1, 1, false},
		{4 * time.Second, 10, 40, 1, 4, true},   // 4/1 ≥ 2: panic
		{6 * time.Second, 10, 10, 4, 4, true},   // no scale-down in panic
		{14 * time.Second, 10, 10, 4, 4, true},  // panicTime+10s is not before now yet
		{16 * time.Second, 10, 10, 4, 2, false}, // leaves panic, rate-limited down
	}
	for i, st := range steps {
		got := d.Scale(t0.Add(st.at), Observation{Stable: st.stable, Panic: st.pnc, Ready: st.ready})
		if got.DesiredScale != st.want || got.InPanic != st.wantInPanic {
			t.Errorf("step %d: %+v, want desired %d panic %v", i, got, st.want, st.wantInPanic)
		}
	}
}

func TestScaleDownDelay(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := Spec{MaxScaleUpRate: 1000, MaxScaleDownRate: 1000, TargetValue: 10, TotalValue: 10,
		PanicThreshold: 1000, StableWindow: 10 * time.Second, ScaleDownDelay: 6 * time.Second, Reachable: true}
	d := New(s, 1, t0)
	loads := []float64{50, 10, 10, 10, 10}
	want := []int32{5, 5, 5, 1, 1} // 6 s = 3 slots of 2 s
	for i, l := range loads {
		got := d.Scale(t0.Add(time.Duration(2*i)*time.Second), Observation{Stable: l, Panic: l, Ready: 5})
		if got.DesiredScale != want[i] {
			t.Errorf("step %d: desired %d, want %d", i, got.DesiredScale, want[i])
		}
	}
}

func TestScaleAllocatesNothing(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := Spec{MaxScaleUpRate: 1000, MaxScaleDownRate: 2, TargetValue: 10, TotalValue: 10,
		TargetBurstCapacity: 200, PanicThreshold: 2, StableWindow: time.Minute, ScaleDownDelay: time.Minute, Reachable: true}
	d := New(s, 3, t0)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		d.Scale(t0.Add(time.Duration(i)*time.Second), Observation{Stable: float64(i % 70), Panic: float64(i % 90), Ready: 3})
	}); n != 0 {
		t.Errorf("Scale allocates %v times", n)
	}
}
