package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/thaw-dev/thaw/pkg/lab/demo"
	"github.com/thaw-dev/thaw/pkg/lab/kingress"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

func labCommands() map[string]command {
	return map[string]command{
		"up":         {"build what is missing, start the lab cluster and Knative Serving", labUp},
		"down":       {"stop the lab and restore the host", labDown},
		"status":     {"show the lab's daemons, node and system pods", labStatus},
		"swap":       {"run Thaw's activator and autoscaler (or the given images)", labSwap},
		"unswap":     {"go back to upstream's activator and autoscaler", labUnswap},
		"kubeconfig": {"print the lab kubeconfig path", labKubeconfig},
		"demo":       {"up --swap, deploy helloworld-go, cold request, watch scale to zero", labDemo},
		"ingress":    {"run the lab's ingress proxy (started by `up`)", labIngress},
	}
}

func newFlags(name string) *flag.FlagSet {
	return flag.NewFlagSet("thaw lab "+name, flag.ContinueOnError)
}

func labUp(ctx context.Context, args []string) error {
	fs := newFlags("up")
	doSwap := fs.Bool("swap", false, "swap in Thaw's activator and autoscaler after the install")
	skipBuild := fs.Bool("skip-build", false, "use the cached tools and images as they are")
	fast := fs.Bool("fast-probes", false, "1 s readiness probes on Knative's Deployments (upstream: 10 s)")
	domain := fs.String("cluster-domain", "", "the cluster's DNS domain (default cluster.local); change it on a lab that is down")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := stack.Open(ctx, stack.Options{Out: os.Stdout, SkipBuild: *skipBuild, Swap: *doSwap, FastProbes: *fast,
		ClusterDomain: *domain})
	if err != nil {
		return err
	}
	if err := s.Up(ctx); err != nil {
		return err
	}
	fmt.Printf("export KUBECONFIG=%s\n", s.Lab.Cfg.Kubeconfig())
	return nil
}

func labDown(ctx context.Context, args []string) error {
	fs := newFlags("down")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Teardown runs to the end even when interrupted: a half-restored host is worse.
	return stack.OpenExisting(ctx, stack.Options{Out: os.Stdout}).Down(context.WithoutCancel(ctx))
}

func labStatus(ctx context.Context, args []string) error {
	fs := newFlags("status")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Print(stack.OpenExisting(ctx, stack.Options{}).Status(ctx))
	return nil
}

func swapFlags(name string, def swap.Images, args []string) (swap.Images, error) {
	fs := newFlags(name)
	act := fs.String("activator-image", def["activator"], "activator image")
	as := fs.String("autoscaler-image", def["autoscaler"], "autoscaler image")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return swap.Images{"activator": *act, "autoscaler": *as}, nil
}

func labSwap(ctx context.Context, args []string) error {
	im, err := swapFlags("swap", stack.ThawImages(), args)
	if err != nil {
		return err
	}
	return stack.OpenExisting(ctx, stack.Options{Out: os.Stdout}).Swap(ctx, im)
}

func labUnswap(ctx context.Context, args []string) error {
	im, err := swapFlags("unswap", stack.UpstreamImages(), args)
	if err != nil {
		return err
	}
	return stack.OpenExisting(ctx, stack.Options{Out: os.Stdout}).Swap(ctx, im)
}

func labKubeconfig(ctx context.Context, args []string) error {
	fs := newFlags("kubeconfig")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := stack.OpenExisting(ctx, stack.Options{})
	p := s.Lab.Cfg.Kubeconfig()
	if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("no kubeconfig yet (run `thaw lab up`): %w", err)
	}
	fmt.Println(p)
	return nil
}

func labDemo(ctx context.Context, args []string) error {
	fs := newFlags("demo")
	noSwap := fs.Bool("no-swap", false, "keep upstream's activator and autoscaler")
	fast := fs.Bool("fast-probes", false, "1 s readiness probes on Knative's Deployments")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := stack.Open(ctx, stack.Options{Out: os.Stdout, FastProbes: *fast})
	if err != nil {
		return err
	}
	return demo.Run(ctx, s, !*noSwap, os.Stdout)
}

func labIngress(ctx context.Context, args []string) error {
	fs := newFlags("ingress")
	kc := fs.String("kubeconfig", "", "kubeconfig of the cluster")
	listen := fs.String("listen", "", "address to serve on, e.g. 10.88.0.1:80")
	domain := fs.String("cluster-domain", kingress.DefaultClusterDomain, "the cluster's DNS domain")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kc == "" || *listen == "" {
		return errors.New("--kubeconfig and --listen are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kc)
	if err != nil {
		return err
	}
	logger, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer logger.Sync() //nolint:errcheck
	log := logger.Sugar()
	log.Infow("ingress starting", "listen", *listen)
	t0 := time.Now()
	return kingress.Run(ctx, cfg, kingress.Options{ListenAddr: *listen, Logger: log, ClusterDomain: *domain,
		Ready: func(a net.Addr) { log.Infow("ingress ready", "addr", a.String(), "after", time.Since(t0)) }})
}
