package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/thaw-dev/thaw/pkg/images"
	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/swap"
)

// thaw swap and thaw unswap, for any cluster (thaw lab swap is the lab's).
var (
	swapCommand   = command{"run Thaw's activator and autoscaler in any Knative Serving install: only the two images change", swapCmd}
	unswapCommand = command{"go back to the images `thaw swap` replaced", unswapCmd}
)

// swapFlagSet holds what swap and unswap share.
type swapFlagSet struct {
	fs                  *flag.FlagSet
	kubeconfig, context string
	namespace           string
	activator, autosc   string
	timeout             time.Duration
}

func newSwapFlags(name string) *swapFlagSet {
	s := &swapFlagSet{fs: flag.NewFlagSet("thaw "+name, flag.ContinueOnError)}
	s.fs.StringVar(&s.kubeconfig, "kubeconfig", "", "kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	s.fs.StringVar(&s.context, "context", "", "kubeconfig context (default the current one)")
	s.fs.StringVar(&s.namespace, "namespace", swap.Namespace, "Knative Serving's namespace")
	s.fs.DurationVar(&s.timeout, "timeout", 5*time.Minute, "how long to wait for the rollout")
	return s
}

func (s *swapFlagSet) client() (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = s.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: s.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	return kc, cfg.Host, err
}

func (s *swapFlagSet) images() swap.Images {
	im := swap.Images{}
	if s.activator != "" {
		im["activator"] = s.activator
	}
	if s.autosc != "" {
		im["autoscaler"] = s.autosc
	}
	return im
}

func (s *swapFlagSet) options() swap.Options {
	last := time.Time{}
	return swap.Options{Namespace: s.namespace, Timeout: s.timeout, Progress: func(format string, args ...any) {
		if time.Since(last) >= 5*time.Second {
			last = time.Now()
			fmt.Printf(format+"\n", args...)
		}
	}}
}

func printImages(what string, im swap.Images) {
	cs := make([]string, 0, len(im))
	for c := range im {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	for _, c := range cs {
		fmt.Printf("%s %s %s\n", what, c, im[c])
	}
}

// defaultOverlay is the checkout's overlay, when thaw runs inside one.
func defaultOverlay() string {
	repo, err := build.FindRepoRoot()
	if err != nil {
		return ""
	}
	return filepath.Join(repo, "config", "overlays", "thaw", "kustomization.yaml")
}

func swapCmd(ctx context.Context, args []string) error {
	s := newSwapFlags("swap")
	s.fs.StringVar(&s.activator, "activator-image", "", "Thaw's activator image (default the overlay's)")
	s.fs.StringVar(&s.autosc, "autoscaler-image", "", "Thaw's autoscaler image (default the overlay's)")
	overlay := s.fs.String("overlay", defaultOverlay(), "kustomization whose images are the defaults (what `thaw images push --overlay` wrote)")
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	want := s.images()
	if len(want) < len(swap.Components) {
		if *overlay == "" {
			return errors.New("name --activator-image and --autoscaler-image (no overlay to take them from)")
		}
		def, err := images.ReadOverlay(*overlay)
		if err != nil {
			return err
		}
		for c, img := range def {
			if want[c] == "" {
				want[c] = img
			}
		}
	}
	kc, host, err := s.client()
	if err != nil {
		return err
	}
	fmt.Printf("swapping in %s on %s\n", s.namespace, host)
	printImages("image", want)
	prev, err := swap.Swap(ctx, kc, want, s.options())
	if err != nil {
		return err
	}
	printImages("remembered", prev)
	fmt.Println("swapped and rolled out; `thaw unswap` goes back")
	return nil
}

func unswapCmd(ctx context.Context, args []string) error {
	s := newSwapFlags("unswap")
	s.fs.StringVar(&s.activator, "activator-image", "", "image to go back to (default the one the swap remembered)")
	s.fs.StringVar(&s.autosc, "autoscaler-image", "", "image to go back to (default the one the swap remembered)")
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	kc, host, err := s.client()
	if err != nil {
		return err
	}
	fmt.Printf("unswapping in %s on %s\n", s.namespace, host)
	back, err := swap.Unswap(ctx, kc, s.images(), s.options())
	if err != nil {
		return err
	}
	printImages("image", back)
	fmt.Println("unswapped and rolled out")
	_ = os.Stdout.Sync()
	return nil
}
