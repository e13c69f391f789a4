package replay

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/trace"
)

// The replay on a cluster compresses the trace's time by a speed: trace
// offset t (from the window's start) is sent at t/speed on the wall clock,
// and a function's execution time d runs for d/speed, so that each
// function's concurrency (arrival rate × execution time) is the trace's.
// The arrivals are the simulation's: the same workloads (sim.Workload), the
// same spreading within each minute and the same seed, so the simulation
// and the cluster see the same requests.

// PlanOptions choose the functions and requests of a replay on a cluster.
type PlanOptions struct {
	Trace  string
	Window trace.Window
	// Functions is how many functions to replay: the first ones in the
	// trace with between 1 and MaxInvocations invocations in the window.
	Functions      int
	MaxInvocations int
	// Speed compresses time (> 0; 1 is real time).
	Speed  float64
	Spread sim.Spread
	Seed   uint64
	// DefaultMemoryMB and DefaultDuration stand in for what the trace does
	// not give.
	DefaultMemoryMB float64
	DefaultDuration time.Duration
	// MaxRequests bounds the plan's size (0: 1,000,000).
	MaxRequests int
}

// PlanFunction is one function of a plan.
type PlanFunction struct {
	App, Name string
	MemoryMB  float64
	// Requests is its number of invocations in the window.
	Requests int

	work sim.Workload // in trace time
}

// Arrival is one request of the plan on the wall clock.
type Arrival struct {
	// Fn indexes Plan.Functions.
	Fn int
	// At is the offset from the replay's start; Sleep the execution time
	// the app is asked for.
	At, Sleep time.Duration
}

// Plan is what a replay on a cluster sends.
type Plan struct {
	Source    string
	Window    trace.Window
	Speed     float64
	Functions []PlanFunction
	// Arrivals are in order of At.
	Arrivals []Arrival
	// Horizon is the wall-clock length of the window.
	Horizon time.Duration
	// Skipped counts the functions left out for having more than
	// MaxInvocations in the window.
	Skipped int
}

// Wall returns the duration d of trace time on the wall clock.
func (p *Plan) Wall(d time.Duration) time.Duration { return wall(d, p.Speed) }

func wall(d time.Duration, speed float64) time.Duration {
	return time.Duration(math.Round(float64(d) / speed))
}

func (o *PlanOptions) validate() error {
	var errs []error
	if o.Functions <= 0 {
		errs = append(errs, fmt.Errorf("functions %d: want at least 1", o.Functions))
	}
	if o.MaxInvocations <= 0 {
		errs = append(errs, fmt.Errorf("max invocations %d: want at least 1", o.MaxInvocations))
	}
	if !(o.Speed > 0) || math.IsInf(o.Speed, 0) {
		errs = append(errs, fmt.Errorf("speed %v: want a finite number > 0", o.Speed))
	}
	if o.Spread != sim.SpreadUniform && o.Spread != sim.SpreadEquidistant {
		errs = append(errs, fmt.Errorf("spread %q: want uniform or equidistant", o.Spread))
	}
	if err := o.Window.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.MaxRequests <= 0 {
		o.MaxRequests = 1_000_000
	}
	if o.DefaultDuration <= 0 {
		o.DefaultDuration = time.Second
	}
	return errors.Join(errs...)
}

// workload is a function's requests as the simulation makes them (see
// Options.function).
func workload(fn *trace.Function, w trace.Window, spread sim.Spread, seed uint64, def time.Duration) sim.Workload {
	if fn.Minutes != nil {
		return sim.NewMinutesWorkload(fn.Minutes, sim.NewDurations(fn.Durations, def), spread, seed)
	}
	return sim.NewInvocationsWorkload(fn.Invocations, w.To)
}

// BuildPlan reads the trace and lays out the requests of the chosen
// functions on the wall clock.
func BuildPlan(o PlanOptions) (*Plan, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	src, err := trace.Open(o.Trace, o.Window)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	p := &Plan{Source: src.String(), Window: o.Window, Speed: o.Speed}
	var horizon time.Duration
	total := 0
	for len(p.Functions) < o.Functions {
		fn, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		w := workload(fn, o.Window, o.Spread, o.Seed, o.DefaultDuration)
		n := w.Count()
		if n == 0 {
			continue
		}
		if n > o.MaxInvocations {
			p.Skipped++
			continue
		}
		if total+n > o.MaxRequests {
			return nil, fmt.Errorf("more than %d requests in %d functions: choose fewer functions or a shorter window", o.MaxRequests, len(p.Functions)+1)
		}
		total += n
		mem := fn.MemoryMB
		if mem <= 0 {
			mem = o.DefaultMemoryMB
		}
		i := len(p.Functions)
		p.Functions = append(p.Functions, PlanFunction{App: fn.App, Name: fn.Name, MemoryMB: mem, Requests: n, work: w})
		horizon = max(horizon, w.Horizon())
		for q, ok := w.Next(); ok; q, ok = w.Next() {
			at := max(q.At-o.Window.From, 0)
			p.Arrivals = append(p.Arrivals, Arrival{Fn: i, At: wall(at, o.Speed), Sleep: wall(q.Duration, o.Speed)})
		}
		w.Reset()
	}
	if len(p.Functions) == 0 {
		return nil, fmt.Errorf("%s: no function with 1 to %d invocations in the window", p.Source, o.MaxInvocations)
	}
	// Stable: a function's own order is kept for equal times.
	sort.SliceStable(p.Arrivals, func(a, b int) bool { return p.Arrivals[a].At < p.Arrivals[b].At })
	p.Horizon = wall(max(horizon-o.Window.From, 0), o.Speed)
	if o.Window.To > 0 {
		p.Horizon = wall(o.Window.To-o.Window.From, o.Speed)
	}
	return p, nil
}

// wallWorkload is a function's workload on the wall clock of the replay:
// what the simulation of the cluster's run replays.
type wallWorkload struct {
	w       sim.Workload
	from    time.Duration
	speed   float64
	horizon time.Duration
}

func (w *wallWorkload) Reset()                 { w.w.Reset() }
func (w *wallWorkload) Count() int             { return w.w.Count() }
func (w *wallWorkload) Horizon() time.Duration { return w.horizon }
func (w *wallWorkload) Next() (sim.Request, bool) {
	q, ok := w.w.Next()
	if !ok {
		return q, false
	}
	return sim.Request{At: wall(max(q.At-w.from, 0), w.speed), Duration: wall(q.Duration, w.speed)}, true
}

// WallWorkload returns function i's requests on the replay's wall clock,
// ending at the plan's horizon.
func (p *Plan) WallWorkload(i int) sim.Workload {
	return &wallWorkload{w: p.Functions[i].work, from: p.Window.From, speed: p.Speed, horizon: p.Horizon}
}

// TraceWorkload returns function i's requests in trace time, as
// `thaw replay --simulate` replays them.
func (p *Plan) TraceWorkload(i int) sim.Workload { return p.Functions[i].work }
