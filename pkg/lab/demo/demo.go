// Package demo is `thaw lab demo` (what `make run` runs): the lab up with Thaw swapped in, helloworld-go
// deployed, one cold request through the ingress, and the revision scaling back to zero.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	labhost "github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// Sample is the ksvc manifest, relative to the checkout.
const Sample = "config/samples/helloworld.yaml"

// Run runs the demo on a Stack opened by the caller. swapWanted asks for Thaw's components; when they
// are not built yet, the demo says so and runs upstream's.
func Run(ctx context.Context, s *stack.Stack, swapWanted bool, out io.Writer) error {
	t0 := time.Now()
	s.Opts.Swap = false
	if err := s.Up(ctx); err != nil {
		return err
	}
	if swapWanted {
		if len(s.Paths.ThawSkipped) > 0 {
			fmt.Fprintf(out, "demo: Thaw's components are not all built (%v): running upstream's activator and autoscaler\n", s.Paths.ThawSkipped)
		} else if err := s.Swap(ctx, stack.ThawImages()); err != nil {
			return err
		}
	}
	cl, err := s.Lab.Client()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(s.Opts.Repo, Sample))
	if err != nil {
		return err
	}
	objs, err := kube.Decode(b)
	if err != nil {
		return err
	}
	ns, name := objs[0].GetNamespace(), objs[0].GetName()
	if err := cl.Apply(ctx, objs); err != nil {
		return err
	}
	tr := time.Now()
	rev, err := ksvc.WaitReady(ctx, cl, ns, name, 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "demo: ksvc %s Ready in %s (revision %s)\n", name, since(tr), rev)
	// The first request must be cold: wait until no pod is left from an earlier run.
	if err := ksvc.WaitNoPods(ctx, cl, ns, name, time.Second, 3*time.Minute, nil); err != nil {
		return fmt.Errorf("waiting for %s to be at zero before the cold request: %w", name, err)
	}
	if err := ksvc.WaitRoutable(ctx, cl, ns, name, labhost.ServiceProgrammed, time.Minute); err != nil {
		return err
	}
	host := ksvc.Host(name, ns, stack.Domain)
	hc := ksvc.NewClient(s.IngressAddr(), 60*time.Second)
	resp, err := hc.Get(ctx, host, "/")
	if err != nil {
		return fmt.Errorf("cold request: %w", err)
	}
	fmt.Fprintf(out, "demo: curl -H 'Host: %s' http://%s/\n", host, s.IngressAddr())
	fmt.Fprintf(out, "demo: cold request: %d %q in %s\n", resp.Status, trim(resp.Body), resp.Duration.Round(time.Millisecond))
	if resp.Status != 200 {
		return fmt.Errorf("cold request answered %d", resp.Status)
	}
	warm, err := hc.Get(ctx, host, "/")
	if err == nil {
		fmt.Fprintf(out, "demo: warm request: %d in %s\n", warm.Status, warm.Duration.Round(time.Microsecond))
	}
	fmt.Fprintf(out, "demo: watching %s scale back to zero (pods: total/ready)\n", name)
	last := ""
	err = ksvc.WaitNoPods(ctx, cl, ns, name, time.Second, 5*time.Minute, func(el time.Duration, total, ready int) {
		if cur := fmt.Sprintf("%d/%d", total, ready); cur != last || el.Round(time.Second)%(10*time.Second) == 0 {
			fmt.Fprintf(out, "demo: t+%3ds pods %s\n", int(el.Seconds()), cur)
			last = cur
		}
	})
	if err != nil {
		return fmt.Errorf("scale to zero: %w", err)
	}
	fmt.Fprintf(out, "demo: %s is back at zero pods; demo took %s\n\n", name, since(t0))
	fmt.Fprintf(out, "The lab keeps running. Use it with:\n  export KUBECONFIG=%s\n  kubectl get ksvc,pods -A\n  curl -H 'Host: %s' http://%s/\nStop it and restore the host with:\n  thaw lab down   (bin/thaw lab down)\n",
		s.Lab.Cfg.Kubeconfig(), host, s.IngressAddr())
	return nil
}

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }
