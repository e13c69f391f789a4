package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/replay"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/trace"
	"github.com/thaw-dev/thaw/pkg/keepalive"
	"github.com/thaw-dev/thaw/pkg/lab/build"
)

const replaySummary = "replay a serverless trace: --simulate runs every function under each scale-to-zero policy"

// replayCmd wires `thaw replay TRACE --simulate`; the work is in
// pkg/experiment/replay.
func replayCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("thaw replay", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: thaw replay TRACE --simulate [flags]")
		fmt.Fprintln(fs.Output(), "TRACE: a directory of Azure Functions 2019 tables, one 2019 invocations table, or a 2021 invocations table")
		fs.PrintDefaults()
	}
	simulate := fs.Bool("simulate", false, "simulate on a fake clock (required: the cluster replay is not built yet)")
	policies := fs.String("policies", replay.DefaultPolicies, "comma-separated policies: upstream, fixed-<duration> (retention period), hybrid (the paper's), learned (Thaw's)")
	from := fs.Duration("from", 0, "start of the window, from the trace's start")
	to := fs.Duration("to", 0, "end of the window (0: the trace's end)")
	cold := fs.Duration("cold-start", time.Second, "time from scale-up to a ready pod (lab: 0.8-1.1 s p50 for a small app)")
	spread := fs.String("spread", string(sim.SpreadUniform), "invocations within a minute: uniform (seeded random) or equidistant")
	seed := fs.Uint64("seed", 1, "seed of the arrival and execution-time draws")
	mem := fs.Float64("memory-mb", 256, "memory of functions the trace gives none for")
	dur := fs.Duration("duration", time.Second, "execution time of functions the trace gives none for")
	workers := fs.Int("workers", 0, "functions simulated in parallel (0: one per CPU)")
	out := fs.String("out", "", "directory for replay.csv, summary.csv, replay.json, pareto.svg, pareto.png (default $THAW_CACHE/replay/<time>)")
	ka := keepalive.DefaultConfig()
	fs.DurationVar(&ka.ColdStartCost, "learned-cost", ka.ColdStartCost, "learned: idle pod time one avoided cold start is worth (0: the paper's percentiles)")
	fs.Float64Var(&ka.ColdStartShare, "learned-share", ka.ColdStartShare, "learned: share of the mean idle time added to a cold start's cost")
	fs.DurationVar(&ka.Fallback.KeepAlive, "learned-fallback", ka.Fallback.KeepAlive, "learned: keep-alive while the histogram is not representative")
	fs.IntVar(&ka.MinSamples, "learned-min-samples", ka.MinSamples, "learned: fewest idle times the histogram is trusted with")
	fs.Float64Var(&ka.CVThreshold, "learned-cv", ka.CVThreshold, "learned: least coefficient of variation of the bins to trust the histogram")
	fs.Float64Var(&ka.Head, "learned-head", ka.Head, "learned: head percentile (pre-warm)")
	fs.Float64Var(&ka.Tail, "learned-tail", ka.Tail, "learned: tail percentile (end of keep-alive)")
	fs.Float64Var(&ka.Margin, "learned-margin", ka.Margin, "learned: margin on head and tail")
	if err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want one TRACE, got %d arguments", fs.NArg())
	}
	if !*simulate {
		return errors.New("only --simulate is implemented: the replay on a cluster is still to come")
	}
	if *spread != string(sim.SpreadUniform) && *spread != string(sim.SpreadEquidistant) {
		return fmt.Errorf("--spread %q: want uniform or equidistant", *spread)
	}
	pols, err := replay.ParsePolicies(*policies, ka)
	if err != nil {
		return err
	}
	w := trace.Window{From: *from, To: *to}
	if err := w.Validate(); err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		cache, err := build.DefaultCacheDir()
		if err != nil {
			return err
		}
		dir = filepath.Join(cache, "replay", time.Now().UTC().Format("20060102-150405"))
	}
	opts := replay.Options{
		Trace: fs.Arg(0), Window: w, Policies: pols, Model: sim.Model{ColdStart: *cold},
		Spread: sim.Spread(*spread), Seed: *seed, DefaultMemoryMB: *mem, DefaultDuration: *dur,
		Workers: *workers, Progress: os.Stderr,
	}
	res, err := replay.Simulate(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Printf("replay: %d functions of %s simulated under %d policies in %s (cold start %v)\n",
		res.Functions, res.Source, len(pols), res.Elapsed.Round(time.Millisecond), *cold)
	if err := replay.PrintTable(os.Stdout, res); err != nil {
		return err
	}
	run := map[string]any{"trace": fs.Arg(0), "from": w.From.String(), "to": w.To.String(), "coldStart": cold.String(),
		"spread": *spread, "seed": *seed, "policies": *policies, "learned": ka}
	if err := replay.WriteFiles(dir, res, run); err != nil {
		return err
	}
	fmt.Printf("replay: files in %s\n", dir)
	return nil
}

// parseInterspersed parses flags before and after the positional TRACE.
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(pos)
}
