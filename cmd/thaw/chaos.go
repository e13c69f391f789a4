package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/report"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/runner"
	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
	"github.com/thaw-dev/thaw/test/upstream"
)

func chaosCommands() map[string]command {
	return map[string]command{
		"run": {"chaos scenarios under load (activator and autoscaler kills and deletes, cut-off, network loss and delay, apiserver outage, user pod kills, a never-ready revision), every lost request counted", chaosRun},
	}
}

func chaosRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("thaw chaos run", flag.ContinueOnError)
	kc := fs.String("kubeconfig", "", "kubeconfig of the cluster (default $KUBECONFIG, else the lab's)")
	ns := fs.String("namespace", "chaos", "namespace of the run's services (deleted at the end unless --keep)")
	image := fs.String("image", images.AppImage("autoscale"), "image of the services (answers ?sleep=ms)")
	ingress := fs.String("ingress", "", "ingress host:port (default the lab's)")
	out := fs.String("out", "", "directory for chaos.csv, scale.csv, chaos.json, chaos.svg, chaos.png (default $THAW_CACHE/chaos/<time>)")
	duration := fs.Duration("duration", 5*time.Minute, "how long faults are applied per scenario and side")
	period := fs.Duration("period", 20*time.Second, "time between two faults")
	jitter := fs.Duration("jitter", 5*time.Second, "each period is shifted by up to ± this")
	hold := fs.Duration("hold", 30*time.Second, "how long a held fault (cut-off, network loss or delay, apiserver outage, never-ready) lasts before it is undone")
	loss := fs.Float64("loss", 0.1, "network-loss: share of the packets dropped between the activators and the pods, each way")
	delay := fs.Duration("delay", 100*time.Millisecond, "network-delay: added to each packet from the activators to the pods (one way, so a round trip takes this longer)")
	inject := map[string]string{}
	fs.Func("inject", "injected: a thaw-fault-injection key and its value, KEY=VALUE (repeatable), e.g. 'activator.pod-latency=delay=200ms,p=0.5'",
		func(v string) error {
			k, val, ok := strings.Cut(v, "=")
			if !ok || k == "" {
				return fmt.Errorf("%q: want KEY=VALUE", v)
			}
			inject[k] = val
			return nil
		})
	doomedEvery := fs.Duration("never-every", 10*time.Second, "never-ready: time between two requests to the service that cannot start")
	before := fs.Duration("before", 30*time.Second, "load without faults before the first one")
	after := fs.Duration("after", 60*time.Second, "load without faults after the last one")
	rate := fs.Float64("rate", 10, "steady load, requests/s")
	sleepMs := fs.Duration("sleep", 100*time.Millisecond, "how long the app holds each steady request (concurrency = rate × sleep)")
	coldN := fs.Int("cold-services", 6, "services that scale to zero, poked in turn")
	coldEvery := fs.Duration("cold-every", 5*time.Second, "time between two cold pokes")
	timeout := fs.Duration("timeout", 60*time.Second, "bound of one request")
	replicas := fs.Int("replicas", 3, "activator and autoscaler replicas during the run")
	buckets := fs.Int("buckets", 10, "autoscaler buckets during the run")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the fault targets and jitter")
	keep := fs.Bool("keep", false, "keep the namespace and its services")
	compare := fs.Bool("compare", false, "run with upstream's activator and autoscaler, then with Thaw's")
	thawAct := fs.String("thaw-activator-image", "", "Thaw's activator image for --compare (default the lab's)")
	thawAS := fs.String("thaw-autoscaler-image", "", "Thaw's autoscaler image for --compare (default the lab's)")
	upAct := fs.String("upstream-activator-image", "", "upstream's activator image for --compare (default the lab's)")
	upAS := fs.String("upstream-autoscaler-image", "", "upstream's autoscaler image for --compare (default the lab's)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: thaw chaos run [flags] SCENARIO...\nscenarios:")
		for _, s := range runner.Scenarios {
			fmt.Fprintf(fs.Output(), "  %-20s SLO %.2f  %s\n", s.Name, s.SLO, s.Help)
		}
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no scenario")
	}
	var scenarios []runner.Scenario
	for _, name := range fs.Args() {
		sc, ok := runner.ScenarioByName(name)
		if !ok {
			return fmt.Errorf("unknown scenario %q", name)
		}
		scenarios = append(scenarios, sc)
	}
	if *buckets < 1 || *buckets > upstream.MaxBuckets || *replicas < 1 {
		return fmt.Errorf("--replicas %d --buckets %d: want at least 1 replica and 1 to %d buckets", *replicas, *buckets, upstream.MaxBuckets)
	}
	tgt, err := openTarget(ctx, *kc)
	if err != nil {
		return err
	}
	cache, lab, cl, isLab := tgt.cache, tgt.lab, tgt.cl, tgt.isLab
	o := runner.Options{
		Client: cl, Namespace: *ns, Image: *image, Ingress: *ingress, Scenarios: scenarios,
		Duration: *duration, Period: *period, Jitter: *jitter, Hold: *hold, Before: *before, After: *after,
		Rate: *rate, Sleep: *sleepMs, ColdServices: *coldN, ColdEvery: *coldEvery, Timeout: *timeout, Loss: *loss, Delay: *delay, DoomedEvery: *doomedEvery, Inject: inject,
		Shape: upstream.Shape{Replicas: *replicas, Buckets: *buckets}, Keep: *keep, Seed: *seed, Progress: os.Stdout,
	}
	if isLab {
		if o.Ingress == "" {
			o.Ingress = lab.IngressAddr()
		}
		o.Routable = host.ServiceProgrammed
		o.Swap = lab.Swap
		o.Containerd = &fault.Containerd{Ctr: lab.Paths.Ctr, Address: lab.Lab.Cfg.ContainerdSock()}
		o.Daemons = lab.Lab.Procs
	} else {
		if o.Ingress == "" {
			return errors.New("--ingress is required outside the lab")
		}
		fmt.Println("chaos: not the lab: kills are pod deletes with no grace period (no node access for a SIGKILL); " +
			"autoscaler-cutoff, network-loss, network-delay and apiserver-outage need the lab (elsewhere: injected, activator.pod-latency)")
		o.Swap = func(ctx context.Context, im swap.Images) error { return swap.Apply(ctx, cl.Kube, im, 3*time.Minute) }
	}
	cur, err := swap.Current(ctx, cl.Kube)
	if err != nil {
		return fmt.Errorf("reading the activator and autoscaler images: %w", err)
	}
	if *compare {
		up, thaw, err := tgt.compareImages(*thawAct, *thawAS, *upAct, *upAS)
		if err != nil {
			return err
		}
		o.Sides = []runner.Side{{Name: "upstream", Images: up}, {Name: "thaw", Images: thaw}}
		o.Restore = cur
	} else {
		o.Sides = []runner.Side{{Name: sideName(cur)}}
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join(cache, "chaos", time.Now().UTC().Format("20060102-150405"))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	started := time.Now()
	runs, runErr := runner.Run(ctx, o)
	finished := time.Now()
	if len(runs) == 0 {
		return runErr
	}
	fmt.Println()
	if err := report.WriteTable(os.Stdout, runs); err != nil {
		return errors.Join(runErr, err)
	}
	command := strings.TrimSpace("thaw chaos run " + strings.Join(args, " "))
	if err := writeChaos(dir, command, started, finished, runs); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Printf("results in %s\n", dir)
	return runErr
}

func writeChaos(dir, command string, started, finished time.Time, runs []*report.Run) error {
	write := func(name string, f func(*os.File) error) error {
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
		write("chaos.csv", func(f *os.File) error { return report.WriteCSV(f, runs) }),
		write("scale.csv", func(f *os.File) error { return report.WriteScaleCSV(f, runs) }),
		write("chaos.json", func(f *os.File) error { return report.WriteJSON(f, command, started, finished, runs) }),
		write("chaos.svg", func(f *os.File) error { return report.WritePlot(f, runs, report.SVG) }),
		write("chaos.png", func(f *os.File) error { return report.WritePlot(f, runs, report.PNG) }),
	)
}
