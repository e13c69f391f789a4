package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
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

// compareImages resolves --compare's two sides from the four image flags (thaw activator and
// autoscaler, then upstream's); on the lab, an empty flag takes the lab's image.
func (t target) compareImages(thawAct, thawAS, upAct, upAS string) (up, thaw swap.Images, err error) {
	thaw, up = swap.Images{"activator": thawAct, "autoscaler": thawAS}, swap.Images{"activator": upAct, "autoscaler": upAS}
	if t.isLab {
		fill(thaw, stack.ThawImages())
		fill(up, stack.UpstreamImages())
	}
	if thaw.Validate() != nil || up.Validate() != nil {
		return nil, nil, errors.New("--compare outside the lab needs --thaw-activator-image, --thaw-autoscaler-image, " +
			"--upstream-activator-image and --upstream-autoscaler-image")
	}
	return up, thaw, nil
}
