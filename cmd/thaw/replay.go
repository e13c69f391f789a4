package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/runner"
	"github.com/thaw-dev/thaw/pkg/experiment/replay"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/trace"
	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

const replaySummary = "replay a serverless trace on the cluster (--simulate: every function under each scale-to-zero policy on a simulated clock)"

// replayCmd wires `thaw replay TRACE [--simulate]`; the work is in
// pkg/experiment/replay.
func replayCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("thaw replay", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: thaw replay TRACE [--simulate] [flags]")
		fmt.Fprintln(fs.Output(), "TRACE: a directory of Azure Functions 2019 tables, one 2019 invocations table, or a 2021 invocations table")
		fmt.Fprintln(fs.Output(), "Without --simulate the trace runs on the cluster (the lab's by default): a ksvc per function and policy, time compressed by --speed.")
		fs.PrintDefaults()
	}
	simulate := fs.Bool("simulate", false, "simulate every function on a fake clock instead of running on the cluster")
	policies := fs.String("policies", "", "comma-separated policies: upstream, fixed-<duration> (retention period), hybrid (the paper's), learned (Thaw's) (default: all of them with --simulate, "+labPolicies+" on the cluster)")
	from := fs.Duration("from", 0, "start of the window, from the trace's start")
	to := fs.Duration("to", 0, "end of the window (0: the trace's end)")
	startW := fs.Duration("start", 0, "start of the window (as --from)")
	length := fs.Duration("duration", 0, "length of the window from --start (instead of --to)")
	cold := fs.Duration("cold-start", time.Second, "time from scale-up to a ready pod (lab: 0.8-1.1 s p50 for a small app); on the cluster, for the simulations when the run measured none")
	spread := fs.String("spread", string(sim.SpreadUniform), "invocations within a minute: uniform (seeded random) or equidistant")
	seed := fs.Uint64("seed", 1, "seed of the arrival and execution-time draws")
	mem := fs.Float64("memory-mb", 256, "memory of functions the trace gives none for")
	dur := fs.Duration("exec-time", time.Second, "execution time of functions the trace gives none for")
	workers := fs.Int("workers", 0, "functions simulated in parallel (0: one per CPU)")
	out := fs.String("out", "", "directory for the report files (default $THAW_CACHE/replay/<time>)")
	ka := keepalive.DefaultConfig()
	fs.DurationVar(&ka.ColdStartCost, "learned-cost", ka.ColdStartCost, "learned: idle pod time one avoided cold start is worth (0: the paper's percentiles)")
	fs.Float64Var(&ka.ColdStartShare, "learned-share", ka.ColdStartShare, "learned: share of the mean idle time added to a cold start's cost")
	fs.DurationVar(&ka.Fallback.KeepAlive, "learned-fallback", ka.Fallback.KeepAlive, "learned: keep-alive while the histogram is not representative")
	fs.IntVar(&ka.MinSamples, "learned-min-samples", ka.MinSamples, "learned: fewest idle times the histogram is trusted with")
	fs.Float64Var(&ka.CVThreshold, "learned-cv", ka.CVThreshold, "learned: least coefficient of variation of the bins to trust the histogram")
	fs.Float64Var(&ka.Head, "learned-head", ka.Head, "learned: head percentile (pre-warm)")
	fs.Float64Var(&ka.Tail, "learned-tail", ka.Tail, "learned: tail percentile (end of keep-alive)")
	fs.Float64Var(&ka.Margin, "learned-margin", ka.Margin, "learned: margin on head and tail")
	var lf labFlags
	lf.register(fs)
	if err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want one TRACE, got %d arguments", fs.NArg())
	}
	if *spread != string(sim.SpreadUniform) && *spread != string(sim.SpreadEquidistant) {
		return fmt.Errorf("--spread %q: want uniform or equidistant", *spread)
	}
	if *policies == "" {
		*policies = replay.DefaultPolicies
		if !*simulate {
			*policies = labPolicies
		}
	}
	pols, err := replay.ParsePolicies(*policies, ka)
	if err != nil {
		return err
	}
	w := trace.Window{From: *from, To: *to}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["start"] || set["duration"] {
		if set["from"] || set["to"] {
			return errors.New("--start/--duration and --from/--to both give the window: use one pair")
		}
		w = trace.Window{From: *startW}
		if *length > 0 {
			w.To = *startW + *length
		}
	}
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
	if !*simulate {
		return replayLab(ctx, lf, labRun{trace: fs.Arg(0), window: w, pols: pols, policies: *policies, cold: *cold,
			spread: sim.Spread(*spread), seed: *seed, mem: *mem, dur: *dur, dir: dir, args: args, learned: ka})
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

// labPolicies are the cluster replay's default policies: upstream's
// default, a fixed keep-alive and Thaw's learned policy (on Thaw's side
// only).
const labPolicies = "upstream,fixed-10m,learned"

// labFlags are the flags of the replay on a cluster.
type labFlags struct {
	kubeconfig, namespace, image, ingress, cpu string
	speed                                      float64
	functions, maxInvocations, maxInflight     int
	compare, keep, dryRun, fastPath            bool
	timeout, zeroTimeout, curveStep            time.Duration
	reanalyze                                  string
	thawAct, thawAS, upAct, upAS               string
}

func (l *labFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default $KUBECONFIG, else the lab's)")
	fs.StringVar(&l.namespace, "namespace", "replay", "prefix of each side's namespace (<ns>-<side>, deleted after the side unless --keep)")
	fs.StringVar(&l.image, "image", images.AppImage("autoscale"), "image of the functions: an app whose ?sleep=<ms> is the execution time")
	fs.StringVar(&l.ingress, "ingress", "", "ingress host:port (default the lab's 10.88.0.1:80)")
	fs.StringVar(&l.cpu, "cpu-request", "1m", "CPU request of the app and queue-proxy containers")
	fs.Float64Var(&l.speed, "speed", 12, "time compression: trace time runs this many times faster, execution times and the policies' windows shrink as much")
	fs.IntVar(&l.functions, "functions", 24, "functions to replay: the first ones of the trace with 1 to --max-invocations invocations in the window")
	fs.IntVar(&l.maxInvocations, "max-invocations", 2000, "leave out functions with more invocations than this in the window (the node's budget)")
	fs.IntVar(&l.maxInflight, "max-inflight", 2000, "bound on requests in flight")
	fs.BoolVar(&l.compare, "compare", false, "run with upstream's activator and autoscaler, then with Thaw's")
	fs.BoolVar(&l.keep, "keep", false, "keep the namespaces and their services")
	fs.BoolVar(&l.fastPath, "sim-fast-path", true, "the simulation of the cluster's run scales to zero without the grace once inactive, as upstream's KPA does with the activator in the path")
	fs.DurationVar(&l.curveStep, "sim-cold-step", 10*time.Second, "the simulation of the cluster's run takes the cold-start time the run measured in each step of this length (0: the run's median throughout)")
	fs.StringVar(&l.reanalyze, "reanalyze", "", "compare an earlier run's files in this directory (requests.csv, replay.csv) with the simulation again, touch no cluster; give the run's trace flags")
	fs.BoolVar(&l.dryRun, "dry-run", false, "print the plan and the simulation of the cluster's run, touch no cluster")
	fs.DurationVar(&l.timeout, "timeout", 2*time.Minute, "bound of one request")
	fs.DurationVar(&l.zeroTimeout, "zero-timeout", 5*time.Minute, "bound of the wait for the services to reach zero before the replay")
	fs.StringVar(&l.thawAct, "thaw-activator-image", "", "Thaw's activator image for --compare (default the lab's)")
	fs.StringVar(&l.thawAS, "thaw-autoscaler-image", "", "Thaw's autoscaler image for --compare (default the lab's)")
	fs.StringVar(&l.upAct, "upstream-activator-image", "", "upstream's activator image for --compare (default the lab's)")
	fs.StringVar(&l.upAS, "upstream-autoscaler-image", "", "upstream's autoscaler image for --compare (default the lab's)")
}

// labRun is what the trace flags chose for the cluster replay.
type labRun struct {
	trace    string
	window   trace.Window
	pols     []sim.Policy
	policies string
	cold     time.Duration
	spread   sim.Spread
	seed     uint64
	mem      float64
	dur      time.Duration
	dir      string
	args     []string
	learned  keepalive.Config
}

// replayLab runs the trace on the cluster, side by side with --compare as
// `thaw coldstart` does, then simulates the same requests and writes the
// report files and the comparison.
func replayLab(ctx context.Context, lf labFlags, lr labRun) error {
	plan, err := replay.BuildPlan(replay.PlanOptions{Trace: lr.trace, Window: lr.window, Functions: lf.functions,
		MaxInvocations: lf.maxInvocations, Speed: lf.speed, Spread: lr.spread, Seed: lr.seed,
		DefaultMemoryMB: lr.mem, DefaultDuration: lr.dur})
	if err != nil {
		return err
	}
	lps, err := replay.LabPolicies(lr.pols, lf.speed)
	if err != nil {
		return err
	}
	fmt.Printf("replay: %d functions of %s (%d requests, %d left out over --max-invocations), window %v-%v at speed %g: %v on the wall clock per side\n",
		len(plan.Functions), plan.Source, len(plan.Arrivals), plan.Skipped, lr.window.From, lr.window.To, lf.speed, plan.Horizon)
	if lf.dryRun {
		return predictLab(plan, lps, lr.cold, lf.fastPath)
	}
	if lf.reanalyze != "" {
		res, err := replay.ReadRun(lf.reanalyze, plan)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(lr.dir, 0o755); err != nil {
			return err
		}
		return reportLab(plan, lps, lf, lr, res, nil)
	}
	tgt, err := openTarget(ctx, lf.kubeconfig)
	if err != nil {
		return err
	}
	lab, cl, isLab := tgt.lab, tgt.cl, tgt.isLab
	o := replay.LabOptions{Client: cl, Namespace: lf.namespace, Image: lf.image, CPURequest: lf.cpu, Ingress: lf.ingress,
		Plan: plan, Policies: lps, RequestTimeout: lf.timeout, ZeroTimeout: lf.zeroTimeout, MaxInflight: lf.maxInflight,
		Keep: lf.keep, Progress: os.Stdout}
	if isLab {
		if o.Ingress == "" {
			o.Ingress = lab.IngressAddr()
		}
		o.Routable = host.ServiceProgrammed
		o.Swap = lab.Swap
	} else {
		if o.Ingress == "" {
			return errors.New("--ingress is required outside the lab")
		}
		o.Swap = func(ctx context.Context, im swap.Images) error { return swap.Apply(ctx, cl.Kube, im, 3*time.Minute) }
	}
	cur, err := swap.Current(ctx, cl.Kube)
	if err != nil {
		return fmt.Errorf("reading the activator and autoscaler images: %w", err)
	}
	if lf.compare {
		up, thaw, err := tgt.compareImages(lf.thawAct, lf.thawAS, lf.upAct, lf.upAS)
		if err != nil {
			return err
		}
		o.Sides = []runner.Side{{Name: "upstream", Images: up}, {Name: "thaw", Images: thaw}}
		o.Restore = cur
	} else {
		o.Sides = []runner.Side{{Name: sideName(cur)}}
	}
	if err := os.MkdirAll(lr.dir, 0o755); err != nil {
		return err
	}
	res, runErr := replay.RunLab(ctx, o)
	if res == nil || len(res.Outcomes) == 0 {
		return runErr
	}
	return reportLab(plan, lps, lf, lr, res, runErr)
}

// reportLab simulates the cluster's run res, prints the tables and writes
// the report files; runErr is the run's own error, returned with the rest.
func reportLab(plan *replay.Plan, lps []replay.LabPolicy, lf labFlags, lr labRun, res *replay.LabResult, runErr error) error {
	labRows := res.Rows(plan)
	cmp, simRows, err := replay.Compare(plan, res.Sides, lps, res.Outcomes, labRows, replay.CompareOptions{Cold: lr.cold, TraceCold: lr.cold, FastPath: lf.fastPath, CurveStep: lf.curveStep})
	if err != nil {
		return errors.Join(runErr, err)
	}
	rows := append(labRows, simRows...)
	var names []string
	seen := map[string]bool{}
	for _, r := range rows {
		if !seen[r.Policy] {
			seen[r.Policy] = true
			names = append(names, r.Policy)
		}
	}
	full := &replay.Result{Source: plan.Source, Functions: len(plan.Functions), Rows: rows,
		Summaries: report.Summarise(rows, names), Elapsed: res.Finished.Sub(res.Started)}
	fmt.Println()
	if err := replay.PrintTable(os.Stdout, full); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Println()
	if err := replay.WriteComparisonTable(os.Stdout, cmp); err != nil {
		return errors.Join(runErr, err)
	}
	var settings []string
	for _, lp := range lps {
		settings = append(settings, lp.String())
	}
	run := map[string]any{"command": strings.TrimSpace("thaw replay " + strings.Join(lr.args, " ")), "trace": lr.trace,
		"from": lr.window.From.String(), "to": lr.window.To.String(), "speed": lf.speed, "functions": len(plan.Functions),
		"requests": len(plan.Arrivals), "spread": lr.spread, "seed": lr.seed, "policies": lr.policies, "settings": settings,
		"sides": res.Sides, "started": res.Started, "finished": res.Finished, "coldStartDefault": lr.cold.String(),
		"comparison": cmp, "learned": lr.learned, "simColdStep": lf.curveStep.String(), "reanalyzed": lf.reanalyze}
	werr := errors.Join(replay.WriteFiles(lr.dir, full, run),
		writeFile(filepath.Join(lr.dir, "requests.csv"), func(w io.Writer) error { return replay.WriteOutcomesCSV(w, plan, res.Outcomes) }),
		writeFile(filepath.Join(lr.dir, "compare.csv"), func(w io.Writer) error { return replay.WriteComparisonCSV(w, cmp) }))
	fmt.Printf("replay: files in %s\n", lr.dir)
	return errors.Join(runErr, werr)
}

func writeFile(path string, f func(io.Writer) error) error {
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f(fh); err != nil {
		fh.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return fh.Close()
}

// predictLab prints what the simulation expects of the cluster's run.
func predictLab(plan *replay.Plan, lps []replay.LabPolicy, cold time.Duration, fastPath bool) error {
	var rows []report.Row
	var names []string
	for _, lp := range lps {
		fmt.Printf("replay: policy %s\n", lp)
		wall, err := replay.SimulatePlan(plan, "sim/"+lp.Name, lp.Wall(), sim.Model{ColdStart: cold, Config: lp.Config(), ProxyFastPath: fastPath}, true)
		if err != nil {
			return err
		}
		tr, err := replay.SimulatePlan(plan, "trace/"+lp.Name, lp.Trace, sim.Model{ColdStart: cold}, false)
		if err != nil {
			return err
		}
		rows = append(append(rows, wall...), tr...)
		names = append(names, "sim/"+lp.Name, "trace/"+lp.Name)
	}
	return report.WriteTable(os.Stdout, report.Summarise(rows, names))
}
