package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// target is the cluster an experiment runs against, and whether it is the lab.
type target struct {
	cache string // $THAW_CACHE
	lab   *stack.Stack
	cl    *kube.Client
	isLab bool
}

// openTarget connects to the cluster named by kubeconfig, else $KUBECONFIG, else the lab's, and checks
// that it answers.
func openTarget(ctx context.Context, kubeconfig string) (target, error) {
	cache, err := build.DefaultCacheDir()
	if err != nil {
		return target{}, err
	}
	lab := stack.OpenExisting(ctx, stack.Options{Cache: cache, Out: os.Stdout})
	path := kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		path = lab.Lab.Cfg.Kubeconfig()
		if _, err := os.Stat(path); err != nil {
			return target{}, fmt.Errorf("no --kubeconfig or $KUBECONFIG, and no lab kubeconfig (run `thaw lab up`): %w", err)
		}
	}
	cl, err := kube.NewFromKubeconfig(path)
	if err != nil {
		return target{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = cl.Kube.Discovery().RESTClient().Get().AbsPath("/version").DoRaw(vctx)
	cancel()
	if err != nil {
		return target{}, fmt.Errorf("cluster %s (kubeconfig %s) unreachable: %v", cl.Config.Host, path, err)
	}
	return target{cache: cache, lab: lab, cl: cl, isLab: cl.Config.Host == lab.Lab.Cfg.APIServerURL()}, nil
}
