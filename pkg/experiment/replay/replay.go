// Package replay replays serverless traces against Thaw's scaling code:
// `thaw replay TRACE --simulate` runs every function of a trace through a
// discrete-event simulation (package sim) under several scale-to-zero
// policies and reports cold starts against idle memory (package report).
package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/trace"
)

// DefaultPolicies are the baselines and Thaw's policy.
const DefaultPolicies = "upstream,fixed-1m,fixed-5m,fixed-10m,fixed-20m,hybrid,learned"

// ParsePolicies reads a comma-separated list: upstream, fixed-<duration>
// (a retention period), hybrid (the paper's policy, keepalive.PaperConfig)
// and learned (Thaw's, cfg).
func ParsePolicies(s string, cfg keepalive.Config) ([]sim.Policy, error) {
	var out []sim.Policy
	seen := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		var p sim.Policy
		switch {
		case name == "upstream":
			p = sim.Upstream()
		case name == "learned":
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
			p = sim.Learned(name, cfg)
		case name == "hybrid":
			p = sim.Learned(name, keepalive.PaperConfig())
		case strings.HasPrefix(name, "fixed-"):
			d, err := time.ParseDuration(strings.TrimPrefix(name, "fixed-"))
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("policy %q: want fixed-<duration>, e.g. fixed-10m", name)
			}
			p = sim.Fixed(d)
		default:
			return nil, fmt.Errorf("policy %q: want upstream, fixed-<duration>, hybrid or learned", name)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("policy %q twice", p.Name)
		}
		seen[p.Name] = true
		out = append(out, p)
	}
	return out, nil
}

// Options is one simulation.
type Options struct {
	Trace    string
	Window   trace.Window
	Policies []sim.Policy
	Model    sim.Model
	Spread   sim.Spread
	Seed     uint64
	// DefaultMemoryMB and DefaultDuration stand in for functions the trace
	// gives no memory or execution time for.
	DefaultMemoryMB float64
	DefaultDuration time.Duration
	// Workers simulate functions in parallel (0: GOMAXPROCS).
	Workers int
	// Progress, when set, gets a line now and then.
	Progress io.Writer
}

// Result is a finished simulation.
type Result struct {
	Source    string
	Functions int
	Rows      []report.Row
	Summaries []report.Summary
	Elapsed   time.Duration
}

type job struct {
	i  int
	fn *trace.Function
}

// Simulate replays every function of the trace under every policy. Functions
// stream from the trace into a bounded queue of workers; each worker runs
// all policies for its function on the same requests.
func Simulate(ctx context.Context, o Options) (*Result, error) {
	if len(o.Policies) == 0 {
		return nil, errors.New("no policies")
	}
	if o.Model.ColdStart <= 0 {
		return nil, fmt.Errorf("cold-start time %v: want > 0", o.Model.ColdStart)
	}
	start := time.Now()
	src, err := trace.Open(o.Trace, o.Window)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan job, workers)
	type done struct {
		i    int
		rows []report.Row
		err  error
	}
	results := make(chan done, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				rows, err := o.function(j.fn)
				select {
				case results <- done{j.i, rows, err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	// Feed in its own goroutine so that results drain as they come.
	feedErr := make(chan error, 1)
	go func() {
		defer close(jobs)
		for i := 0; ; i++ {
			if err := ctx.Err(); err != nil {
				feedErr <- err
				return
			}
			fn, err := src.Next()
			if errors.Is(err, io.EOF) {
				feedErr <- nil
				return
			}
			if err != nil {
				feedErr <- err
				return
			}
			select {
			case jobs <- job{i, fn}:
			case <-ctx.Done():
				feedErr <- ctx.Err()
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()

	var byFn [][]report.Row
	var firstErr error
	n := 0
	for d := range results {
		if d.err != nil && firstErr == nil {
			firstErr = d.err
			cancel()
		}
		for len(byFn) <= d.i {
			byFn = append(byFn, nil)
		}
		byFn[d.i] = d.rows
		n++
		if o.Progress != nil && n%25 == 0 {
			fmt.Fprintf(o.Progress, "replay: %d functions simulated (%s)\n", n, time.Since(start).Round(time.Millisecond))
		}
	}
	if err := <-feedErr; err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr != nil {
		return nil, firstErr
	}
	res := &Result{Source: src.String(), Functions: n}
	for _, rows := range byFn {
		res.Rows = append(res.Rows, rows...)
	}
	names := make([]string, len(o.Policies))
	for i, p := range o.Policies {
		names[i] = p.Name
	}
	res.Summaries = report.Summarise(res.Rows, names)
	res.Elapsed = time.Since(start)
	return res, nil
}

// function simulates one function under every policy.
func (o Options) function(fn *trace.Function) ([]report.Row, error) {
	var w sim.Workload
	switch {
	case fn.Minutes != nil:
		w = sim.NewMinutesWorkload(fn.Minutes, sim.NewDurations(fn.Durations, o.DefaultDuration), o.Spread, o.Seed)
	default:
		w = sim.NewInvocationsWorkload(fn.Invocations, o.Window.To)
	}
	mem := fn.MemoryMB
	if mem <= 0 {
		mem = o.DefaultMemoryMB
	}
	rows := make([]report.Row, 0, len(o.Policies))
	for _, p := range o.Policies {
		r, err := sim.Run(w, p, o.Model)
		if err != nil {
			return nil, fmt.Errorf("%s under %s: %w", fn.Name, p.Name, err)
		}
		rows = append(rows, report.Row{Policy: p.Name, App: fn.App, Function: fn.Name, MemoryMB: mem, Result: r})
	}
	return rows, nil
}

// Files are the report files WriteFiles makes in a directory.
var Files = []string{"replay.csv", "summary.csv", "replay.json", "pareto.svg", "pareto.png"}

// WriteFiles writes the report files into dir; run describes the run in
// the JSON.
func WriteFiles(dir string, res *Result, run any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(name string, f func(io.Writer) error) error {
		fh, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := f(fh); err != nil {
			fh.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
		return fh.Close()
	}
	return errors.Join(
		write("replay.csv", func(w io.Writer) error { return report.WriteRowsCSV(w, res.Rows) }),
		write("summary.csv", func(w io.Writer) error { return report.WriteSummaryCSV(w, res.Summaries) }),
		write("replay.json", func(w io.Writer) error {
			return report.WriteJSON(w, report.Document{Run: run, Summaries: res.Summaries, Rows: res.Rows})
		}),
		write("pareto.svg", func(w io.Writer) error { return report.WritePareto(w, res.Summaries, report.SVG) }),
		write("pareto.png", func(w io.Writer) error { return report.WritePareto(w, res.Summaries, report.PNG) }),
	)
}

// PrintTable prints the per-policy table of a result.
func PrintTable(w io.Writer, res *Result) error { return report.WriteTable(w, res.Summaries) }
