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

	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/report"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/runner"
	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

func topCommands() map[string]command {
	return map[string]command{
		"coldstart": {"cold-start experiment: first requests at 1, 5, 25, 100 services at once, per-phase percentiles", coldstart},
		"replay":    {replaySummary, replayCmd},
		"swap":      swapCommand,
		"unswap":    unswapCommand,
	}
}

func coldstart(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("thaw coldstart", flag.ContinueOnError)
	kc := fs.String("kubeconfig", "", "kubeconfig of the cluster (default $KUBECONFIG, else the lab's)")
	ns := fs.String("namespace", "coldstart", "namespace of the experiment's services (deleted at the end unless --keep)")
	image := fs.String("image", images.AppImage("helloworld"), "image of the services")
	services := fs.Int("services", 0, "services to create (default: the largest --parallel, or up to 100 for back-to-back rounds)")
	parallel := fs.String("parallel", "1,5,25,100", "comma-separated numbers of services fired at once")
	repeat := fs.Int("repeat", 1, "rounds per level (distinct services back to back while they last, then a wait for zero)")
	ingress := fs.String("ingress", "", "ingress host:port (default the lab's 10.88.0.1:80)")
	out := fs.String("out", "", "directory for coldstart.csv, .json, .svg, .png (default $THAW_CACHE/coldstart/<time>)")
	fastZero := fs.Bool("fast-zero", false, "set config-autoscaler scale-to-zero-grace-period to 6s for the run (restored after)")
	warmup := fs.Bool("warmup", true, "after each swap, one unmeasured cold start per service (a restarted autoscaler ignores the first poke)")
	keep := fs.Bool("keep", false, "keep the namespace and its services")
	compare := fs.Bool("compare", false, "run with upstream's activator and autoscaler, then with Thaw's, and print ratios")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound of one cold request")
	zeroTimeout := fs.Duration("zero-timeout", 5*time.Minute, "bound of one wait for the services to reach zero")
	cpu := fs.String("cpu-request", "1m", "CPU request of the app and queue-proxy containers (100 pods must fit the node)")
	audit := fs.String("audit-log", "", "apiserver JSON audit log with the /scale patches (default the lab's; none: a Deployment watch)")
	thawAct := fs.String("thaw-activator-image", "", "Thaw's activator image for --compare (default the lab's)")
	thawAS := fs.String("thaw-autoscaler-image", "", "Thaw's autoscaler image for --compare (default the lab's)")
	upAct := fs.String("upstream-activator-image", "", "upstream's activator image for --compare (default the lab's)")
	upAS := fs.String("upstream-autoscaler-image", "", "upstream's autoscaler image for --compare (default the lab's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	levels, err := runner.ParseLevels(*parallel)
	if err != nil {
		return err
	}
	if *repeat <= 0 {
		return fmt.Errorf("--repeat %d: want at least 1", *repeat)
	}
	if *services == 0 {
		*services = runner.DefaultServices(levels, *repeat)
	}
	tgt, err := openTarget(ctx, *kc)
	if err != nil {
		return err
	}
	cache, lab, cl, isLab := tgt.cache, tgt.lab, tgt.cl, tgt.isLab
	o := runner.Options{
		Client: cl, Namespace: *ns, Image: *image, Services: *services, Levels: levels, Repeat: *repeat,
		Ingress: *ingress, RequestTimeout: *timeout, ZeroTimeout: *zeroTimeout, FastZero: *fastZero, Warmup: *warmup, Keep: *keep,
		CPURequest: *cpu, AuditLog: *audit, Progress: os.Stdout,
	}
	if isLab {
		if o.Ingress == "" {
			o.Ingress = lab.IngressAddr()
		}
		if o.AuditLog == "" {
			o.AuditLog = lab.Lab.Cfg.AuditLog()
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
		dir = filepath.Join(cache, "coldstart", time.Now().UTC().Format("20060102-150405"))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	started := time.Now()
	samples, runErr := runner.Run(ctx, o)
	finished := time.Now()
	if len(samples) > 0 {
		fmt.Println()
		if err := report.WriteTable(os.Stdout, samples); err != nil {
			return errors.Join(runErr, err)
		}
		command := strings.TrimSpace("thaw coldstart " + strings.Join(args, " "))
		if err := writeResults(dir, command, started, finished, samples); err != nil {
			return errors.Join(runErr, err)
		}
		fmt.Printf("%d cold starts in %s; samples and plots in %s\n", len(samples), finished.Sub(started).Round(time.Second), dir)
	}
	return runErr
}

// fill sets the components flags left empty.
func fill(im, def swap.Images) {
	for k, v := range def {
		if im[k] == "" {
			im[k] = v
		}
	}
}

// sideName labels a run without --compare by the components it found.
func sideName(cur swap.Images) string {
	switch {
	case sameImages(cur, stack.ThawImages()):
		return "thaw"
	case sameImages(cur, stack.UpstreamImages()):
		return "upstream"
	case strings.Contains(cur["activator"], "/thaw/"):
		return "thaw"
	default:
		return "current"
	}
}

func sameImages(a, b swap.Images) bool {
	return a["activator"] == b["activator"] && a["autoscaler"] == b["autoscaler"]
}

func writeResults(dir, command string, started, finished time.Time, samples []report.Sample) error {
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
		write("coldstart.csv", func(f *os.File) error { return report.WriteCSV(f, samples) }),
		write("coldstart.json", func(f *os.File) error { return report.WriteJSON(f, command, started, finished, samples) }),
		write("coldstart.svg", func(f *os.File) error { return report.WritePlot(f, samples, report.SVG) }),
		write("coldstart.png", func(f *os.File) error { return report.WritePlot(f, samples, report.PNG) }),
	)
}
