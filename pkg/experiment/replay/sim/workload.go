package sim

import (
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/replay/trace"
)

// Spread is how a minute's invocations are placed within it.
type Spread string

// Spreads.
const (
	// SpreadUniform places them at uniformly random instants (seeded), as
	// the trace loaders' default does.
	SpreadUniform Spread = "uniform"
	// SpreadEquidistant places n of them at (i+½)/n of the minute.
	SpreadEquidistant Spread = "equidistant"
)

// Request is one invocation to replay: its arrival and execution time, as
// offsets from the trace start.
type Request struct {
	At, Duration time.Duration
}

// Workload is a function's requests in arrival order. Reset starts it over
// with the same requests, so every policy sees the same ones.
type Workload interface {
	Next() (Request, bool)
	Reset()
	// Horizon is where the replay of this function ends.
	Horizon() time.Duration
	// Count is the number of requests.
	Count() int
}

// Durations draws execution times.
type Durations struct {
	// Points is the piecewise-linear inverse CDF (P in [0,100], V in ms);
	// one point is a constant.
	Points []trace.Percentile
}

// NewDurations returns the execution-time model of a function: its
// percentiles when the table has them, else its average, else def.
func NewDurations(d *trace.Durations, def time.Duration) Durations {
	switch {
	case d == nil:
		return Durations{Points: []trace.Percentile{{P: 50, V: float64(def) / float64(time.Millisecond)}}}
	case len(d.Percentiles) >= 2:
		pts := append([]trace.Percentile(nil), d.Percentiles...)
		sort.Slice(pts, func(i, j int) bool { return pts[i].P < pts[j].P })
		return Durations{Points: pts}
	default:
		return Durations{Points: []trace.Percentile{{P: 50, V: d.Average}}}
	}
}

// Draw returns an execution time for a uniform u in [0,1).
func (d Durations) Draw(u float64) time.Duration {
	pts := d.Points
	ms := pts[0].V
	if len(pts) > 1 {
		p := pts[0].P + u*(pts[len(pts)-1].P-pts[0].P)
		for i := 1; i < len(pts); i++ {
			if p <= pts[i].P || i == len(pts)-1 {
				a, b := pts[i-1], pts[i]
				if b.P > a.P {
					ms = a.V + (b.V-a.V)*(p-a.P)/(b.P-a.P)
				} else {
					ms = b.V
				}
				break
			}
		}
	}
	return time.Duration(ms * float64(time.Millisecond))
}

// seedOf mixes a function's name into the run's seed.
func seedOf(seed uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64() ^ seed
}

// minutesWorkload spreads per-minute counts of the 2019 trace.
type minutesWorkload struct {
	m      *trace.FunctionMinutes
	durs   Durations
	spread Spread
	seed   uint64
	offset time.Duration // trace offset of Counts[0]

	rng   *rand.Rand
	i     int             // minute index
	buf   []time.Duration // this minute's arrivals
	j     int
	count int
}

// NewMinutesWorkload returns the requests of a 2019 trace row: each minute's
// count spread within the minute, execution times drawn from durs, all
// seeded by seed and the function's name.
func NewMinutesWorkload(m *trace.FunctionMinutes, durs Durations, spread Spread, seed uint64) Workload {
	w := &minutesWorkload{m: m, durs: durs, spread: spread, seed: seedOf(seed, trace.Key(m.App, m.Function)),
		offset: time.Duration(m.FirstMinute-1) * time.Minute}
	for _, c := range m.Counts {
		w.count += int(c)
	}
	w.Reset()
	return w
}

func (w *minutesWorkload) Reset() {
	w.rng = rand.New(rand.NewPCG(w.seed, 0x7468617721))
	w.i, w.j, w.buf = -1, 0, w.buf[:0]
}

func (w *minutesWorkload) Count() int { return w.count }

func (w *minutesWorkload) Horizon() time.Duration {
	return w.offset + time.Duration(len(w.m.Counts))*time.Minute
}

func (w *minutesWorkload) Next() (Request, bool) {
	for w.j >= len(w.buf) {
		w.i++
		if w.i >= len(w.m.Counts) {
			return Request{}, false
		}
		n := int(w.m.Counts[w.i])
		w.buf, w.j = w.buf[:0], 0
		start := w.offset + time.Duration(w.i)*time.Minute
		for k := range n {
			var f float64
			if w.spread == SpreadEquidistant {
				f = (float64(k) + 0.5) / float64(n)
			} else {
				f = w.rng.Float64()
			}
			w.buf = append(w.buf, start+time.Duration(f*float64(time.Minute)))
		}
		if w.spread != SpreadEquidistant {
			sort.Slice(w.buf, func(a, b int) bool { return w.buf[a] < w.buf[b] })
		}
	}
	at := w.buf[w.j]
	w.j++
	return Request{At: at, Duration: w.durs.Draw(w.rng.Float64())}, true
}

// invocationsWorkload replays the 2021 trace's invocations as they are.
type invocationsWorkload struct {
	invs    []trace.Invocation
	i       int
	horizon time.Duration
}

// NewInvocationsWorkload returns the requests of a 2021 trace function, in
// start order; horizon 0 means the end of the day of its last invocation.
func NewInvocationsWorkload(invs []trace.Invocation, horizon time.Duration) Workload {
	if horizon == 0 {
		var last time.Duration
		for _, inv := range invs {
			last = max(last, inv.End)
		}
		const day = 24 * time.Hour
		horizon = (last/day + 1) * day
	}
	return &invocationsWorkload{invs: invs, horizon: horizon}
}

func (w *invocationsWorkload) Reset()                 { w.i = 0 }
func (w *invocationsWorkload) Count() int             { return len(w.invs) }
func (w *invocationsWorkload) Horizon() time.Duration { return w.horizon }

func (w *invocationsWorkload) Next() (Request, bool) {
	if w.i >= len(w.invs) {
		return Request{}, false
	}
	inv := w.invs[w.i]
	w.i++
	return Request{At: inv.Start(), Duration: inv.Duration}, true
}
