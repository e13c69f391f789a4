package window

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"knative.dev/serving/pkg/autoscaler/aggregation"
	"knative.dev/serving/pkg/autoscaler/aggregation/max"
)

// upstreamAverager is what both upstream bucket kinds implement.
type upstreamAverager interface {
	Record(time.Time, float64)
	WindowAverage(time.Time) float64
	IsEmpty(time.Time) bool
	ResizeWindow(time.Duration)
}

func newPair(weighted bool, w time.Duration) (*Buckets, upstreamAverager) {
	if weighted {
		return NewWeighted(w), aggregation.NewWeightedFloat64Buckets(w, time.Second)
	}
	return NewLinear(w), aggregation.NewTimedFloat64Buckets(w, time.Second)
}

func randWindow(r *rand.Rand) time.Duration {
	switch r.IntN(4) {
	case 0:
		return time.Duration(1+r.IntN(10)) * time.Second
	case 1:
		// Panic windows are a percentage of the stable window: not whole seconds.
		return time.Duration(100+r.IntN(12000)) * time.Millisecond
	case 2:
		return 60 * time.Second
	default:
		return time.Duration(6+r.IntN(300)) * time.Second
	}
}

func randValue(r *rand.Rand) float64 {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return float64(r.IntN(100))
	case 2:
		return -r.Float64() * 10 // proxied > total happens with skewed reports
	default:
		return r.Float64() * math.Pow(10, float64(r.IntN(5)))
	}
}

// step advances t like a stream of reports: mostly sub-second or a few
// seconds, sometimes a long gap or a jump back (a late activator report).
func step(r *rand.Rand, t time.Time, w time.Duration) time.Time {
	switch r.IntN(10) {
	case 0:
		return t.Add(time.Duration(r.Int64N(int64(3*w + 3*time.Second))))
	case 1:
		return t.Add(-time.Duration(r.Int64N(int64(w + 3*time.Second))))
	case 2, 3:
		return t
	default:
		return t.Add(time.Duration(r.Int64N(int64(2500 * time.Millisecond))))
	}
}

func sameFloat(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

func TestDifferentialRecordAndAverage(t *testing.T) {
	for seed := range uint64(3000) {
		r := rand.New(rand.NewPCG(seed, 0x7468617721))
		weighted := seed%2 == 1
		w := randWindow(r)
		mine, up := newPair(weighted, w)
		now := time.Unix(1_700_000_000+r.Int64N(1_000_000), r.Int64N(1e9))
		for i := range 300 {
			now = step(r, now, w)
			if r.IntN(4) != 0 {
				v := randValue(r)
				mine.Record(now, v)
				up.Record(now, v)
			}
			q := now.Add(time.Duration(r.Int64N(int64(w+3*time.Second))) - time.Second)
			if got, want := mine.Average(q), up.WindowAverage(q); !sameFloat(got, want) {
				t.Fatalf("seed %d weighted=%v window=%v step %d: Average(%v)=%v, upstream %v", seed, weighted, w, i, q, got, want)
			}
			if got, want := mine.IsEmpty(q), up.IsEmpty(q); got != want {
				t.Fatalf("seed %d step %d: IsEmpty=%v, upstream %v", seed, i, got, want)
			}
		}
	}
}

// Upstream's ResizeWindow reads the wall clock, so this test writes around
// the real current time and keeps every resize clearly inside or outside the
// window (a margin of seconds) so that the second boundary cannot matter.
func TestDifferentialResize(t *testing.T) {
	// A seed whose checks ran more than the margin after its wall time (a loaded machine) cannot be
	// compared: upstream read a later clock. Such seeds are counted and passed over, and most must
	// still be compared.
	late := 0
	defer func() {
		if late > 100 {
			t.Errorf("%d of 1000 seeds ran too late to compare", late)
		}
	}()
seeds:
	for seed := range uint64(1000) {
		r := rand.New(rand.NewPCG(seed, 0x726573697a65))
		weighted := seed%2 == 0
		w := time.Duration(3+r.IntN(60)) * time.Second
		mine, up := newPair(weighted, w)
		wall := time.Now()
		// Data ends either well within the window or well before it.
		var end time.Time
		if r.IntN(3) == 0 {
			end = wall.Add(-w - time.Duration(3+r.IntN(30))*time.Second)
		} else {
			end = wall.Add(-w + time.Duration(3+r.IntN(int(w/time.Second)))*time.Second)
			if end.After(wall.Add(-2 * time.Second)) {
				end = wall.Add(-2 * time.Second)
			}
		}
		tm := end.Add(-time.Duration(r.IntN(120)) * time.Second)
		for tm.Before(end) {
			v := randValue(r)
			mine.Record(tm, v)
			up.Record(tm, v)
			tm = tm.Add(time.Duration(r.Int64N(int64(2500 * time.Millisecond))))
		}
		for k := range 3 {
			nw := time.Duration(1+r.IntN(90)) * time.Second
			if k == 2 {
				nw = mine.Window() // same window: a no-op
			}
			mine.Resize(time.Now(), nw)
			up.ResizeWindow(nw)
			for range 20 {
				q := wall.Add(time.Duration(r.Int64N(int64(4*nw))) - 2*nw)
				if got, want := mine.Average(q), up.WindowAverage(q); !sameFloat(got, want) {
					if time.Since(wall) > 2*time.Second {
						late++
						continue seeds
					}
					t.Fatalf("seed %d weighted=%v %v→%v: Average(%v)=%v, upstream %v", seed, weighted, w, nw, q.Sub(wall), got, want)
				}
				if got, want := mine.IsEmpty(q), up.IsEmpty(q); got != want {
					t.Fatalf("seed %d: IsEmpty=%v, upstream %v", seed, got, want)
				}
			}
			// Keep writing after the resize: ring indices must agree.
			for range 10 {
				tm = tm.Add(time.Duration(r.Int64N(int64(1500 * time.Millisecond))))
				v := randValue(r)
				mine.Record(tm, v)
				up.Record(tm, v)
				if got, want := mine.Average(tm), up.WindowAverage(tm); !sameFloat(got, want) {
					t.Fatalf("seed %d after resize: Average=%v, upstream %v", seed, got, want)
				}
			}
		}
	}
}

func TestLinearAverage(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name   string
		window time.Duration
		writes map[int]float64 // second offset → value
		at     int
		want   float64
	}{
		{"single write", 60 * time.Second, map[int]float64{0: 6}, 0, 6},
		{"partial window divides by seconds since first write", 60 * time.Second, map[int]float64{0: 6, 2: 3}, 2, 3},
		{"trailing empty seconds are excluded", 60 * time.Second, map[int]float64{0: 6, 2: 3}, 10, 3},
		{"gaps inside count as zero", 4 * time.Second, map[int]float64{0: 4, 3: 4}, 3, 2},
		{"older than the window is zero", 5 * time.Second, map[int]float64{0: 4}, 5, 0},
		{"rounded to six digits", 3 * time.Second, map[int]float64{0: 1, 1: 0, 2: 0}, 2, 0.333333},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewLinear(tc.window)
			for s := range 100 {
				if v, ok := tc.writes[s]; ok {
					b.Record(t0.Add(time.Duration(s)*time.Second+300*time.Millisecond), v)
				}
			}
			if got := b.Average(t0.Add(time.Duration(tc.at) * time.Second)); got != tc.want {
				t.Errorf("Average = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSameSecondIsSummed(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	b := NewLinear(10 * time.Second)
	b.Record(t0, 1)
	b.Record(t0.Add(999*time.Millisecond), 2)
	if got := b.Average(t0); got != 3 {
		t.Errorf("Average = %v, want 3", got)
	}
}

func TestWeightedCoefficient(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want float64
	}{{60, 0.2}, {6, 0.785}} {
		if got := smoothing(tc.n); math.Abs(got-tc.want) > 0.001 {
			t.Errorf("smoothing(%d) = %v, want ≈%v", tc.n, got, tc.want)
		}
	}
}

func TestDifferentialMax(t *testing.T) {
	for seed := range uint64(2000) {
		r := rand.New(rand.NewPCG(seed, 0x6d6178))
		d := time.Duration(r.IntN(40)) * time.Second
		if r.IntN(3) == 0 {
			d = time.Duration(r.Int64N(int64(20 * time.Second)))
		}
		if d <= 0 {
			d = time.Second
		}
		mine, up := NewMax(d), max.NewTimeWindow(d, 2*time.Second)
		now := time.Unix(1_700_000_000+r.Int64N(1_000_000), r.Int64N(1e9))
		for i := range 200 {
			// Deciders tick forward in time; sometimes twice in one slot.
			now = now.Add(time.Duration(r.Int64N(int64(6 * time.Second))))
			v := int32(r.IntN(50))
			mine.Record(now, v)
			up.Record(now, v)
			if got, want := mine.Current(), up.Current(); got != want {
				t.Fatalf("seed %d d=%v step %d: Current=%d, upstream %d", seed, d, i, got, want)
			}
		}
	}
}

func TestMax(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := NewMax(10 * time.Second) // 5 slots
	if m.Current() != 0 {
		t.Fatalf("empty Current = %d", m.Current())
	}
	vals := []int32{5, 8, 3, 3, 3, 3, 2}
	want := []int32{5, 8, 8, 8, 8, 8, 3}
	for i, v := range vals {
		m.Record(t0.Add(time.Duration(i)*MaxGranularity), v)
		if got := m.Current(); got != want[i] {
			t.Errorf("step %d: Current = %d, want %d", i, got, want[i])
		}
	}
}

// Garbage timestamps must not crash; ones in the past must not disturb the
// window. (Far-future ones move the window: the collector rejects them.)
func TestAbsurdTimes(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	past := []time.Time{time.Unix(math.MinInt64, 0), time.Unix(math.MinInt64/4, 0), time.Unix(-1, 0), {}}
	for _, weighted := range []bool{false, true} {
		b := newBuckets(10*time.Second, weighted)
		b.Record(t0, 4)
		for _, bad := range past {
			b.Record(bad, 1000)
			_ = b.Average(bad)
			_ = b.IsEmpty(bad)
		}
		if got, want := b.Average(t0), map[bool]float64{false: 4, true: 4 * b.coeff}[weighted]; got != want {
			t.Errorf("weighted=%v: Average = %v, want %v", weighted, got, want)
		}
		for _, bad := range []time.Time{time.Unix(math.MaxInt64, 0), time.Unix(math.MaxInt64/4, 0)} {
			b.Record(bad, 1000)
			_ = b.Average(bad)
			b.Resize(bad, 3*time.Second)
		}
	}
}

// A window copied second by second through Each into empty buckets averages the same, linear and
// weighted, at any later time within the window.
func TestEachCopies(t *testing.T) {
	for _, mk := range []func(time.Duration) *Buckets{NewLinear, NewWeighted} {
		src := mk(60 * time.Second)
		base := time.Unix(1_800_000_000, 0)
		for i := range 90 {
			if i%7 == 3 {
				continue // a second without stats
			}
			src.Record(base.Add(time.Duration(i)*time.Second), float64(i%11))
			src.Record(base.Add(time.Duration(i)*time.Second+300*time.Millisecond), 1)
		}
		dst := mk(60 * time.Second)
		src.Each(func(sec int64, v float64) { dst.Record(time.Unix(sec, 0), v) })
		for _, later := range []time.Duration{89, 90, 100, 140} {
			now := base.Add(later * time.Second)
			if s, d := src.Average(now), dst.Average(now); s != d {
				t.Fatalf("weighted=%v at +%ds: source %v, copy %v", src.Weighted(), later, s, d)
			}
		}
	}
}
