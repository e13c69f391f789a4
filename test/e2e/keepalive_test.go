//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// Idle gap between two requests of TestKeepAlive: longer than the suite's
// stable window plus grace (6 s + 6 s), after which upstream's policy has
// taken the pod away, and far shorter than the learned policy's fallback
// keep-alive at time scale 6 (10 min / 6 = 100 s).
const keepAliveGap = 20 * time.Second

// TestKeepAlive runs Thaw's learned keep-alive on the lab: a revision that
// asks for it (autoscaling.thaw.dev/keep-alive) keeps its pod through idle
// gaps after which a revision with nothing set, upstream's policy, is at
// zero again; its PodAutoscaler shows the learned windows and carries the
// persisted state, and the other's carries neither.
func TestKeepAlive(t *testing.T) {
	needLab(t, ns)
	if len(lab.stack.Paths.ThawSkipped) > 0 {
		t.Fatalf("Thaw's components are not built: %v", lab.stack.Paths.ThawSkipped)
	}
	// Only Thaw's autoscaler has the policy: swap it in, put upstream's
	// back after.
	t.Cleanup(func() {
		up := stack.UpstreamImages()
		if err := lab.stack.Swap(context.Background(), up); err != nil {
			t.Errorf("restoring upstream's components: %v", err)
		} else if err := waitAutoscalerLeads(context.Background(), up["autoscaler"]); err != nil {
			t.Error(err)
		}
	})
	thaw := stack.ThawImages()
	swapTo(t, thaw["autoscaler"], thaw)
	sc := servingClient(t)
	base := map[string]string{"autoscaling.knative.dev/window": "6s"}
	learned := map[string]string{"autoscaling.knative.dev/window": "6s",
		asconfig.KeepAliveAnnotationKey:          "learned",
		asconfig.KeepAliveTimeScaleAnnotationKey: "6"}
	off := setupAutoscaleSvc(t, "keepalive-off", asOptions{annotations: base})
	on := setupAutoscaleSvc(t, "keepalive-learned", asOptions{annotations: learned})

	// send tells whether a request went through a cold start: its
	// revision had no ready pod when it was sent.
	send := func(s *asSvc) (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d, err := s.deployment(ctx)
		if err != nil {
			t.Errorf("%s: %v", s.name, err)
			return false, ""
		}
		resp, err := httpClient().Get(ctx, s.host, sleepPath(10))
		if err != nil || resp.Status != 200 {
			t.Errorf("%s: %v %v", s.name, err, resp.Status)
			return false, ""
		}
		return d.Status.ReadyReplicas == 0, fmt.Sprintf("%d ready pods before, answered in %v", d.Status.ReadyReplicas, resp.Duration.Round(time.Millisecond))
	}
	colds := map[string]int{}
	var mu sync.Mutex
	const rounds = 3
	for i := range rounds {
		time.Sleep(keepAliveGap)
		var wg sync.WaitGroup
		for _, s := range []*asSvc{off, on} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, h := send(s)
				t.Logf("round %d %s: cold %v (%s)", i+1, s.name, c, h)
				if c {
					mu.Lock()
					colds[s.name]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	// One round of slack for the control: its first gap may start before
	// the revision's first stable window ends.
	if colds[off.name] < rounds-1 {
		t.Errorf("%s (upstream's policy): %d of %d requests after %v idle were cold, want at least %d: the gap does not show a keep-alive",
			off.name, colds[off.name], rounds, keepAliveGap, rounds-1)
	}
	if colds[on.name] != 0 {
		t.Errorf("%s (learned keep-alive): %d of %d requests after %v idle were cold, want 0", on.name, colds[on.name], rounds, keepAliveGap)
	}

	last, err := poll(30*time.Second, time.Second, func(ctx context.Context) (bool, string) {
		pa, err := sc.AutoscalingV1alpha1().PodAutoscalers(ns).Get(ctx, on.rev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		w, st := pa.Annotations[asconfig.KeepAliveWindowsAnnotationKey], pa.Annotations[asconfig.KeepAliveStateAnnotationKey]
		return w != "" && st != "", "windows " + w + ", state " + truncate(st, 80)
	})
	if err != nil {
		t.Errorf("%s's PodAutoscaler: no keep-alive windows and state: %s", on.name, last)
	} else {
		t.Logf("%s's PodAutoscaler: %s", on.name, last)
	}
	pa, err := sc.AutoscalingV1alpha1().PodAutoscalers(ns).Get(context.Background(), off.rev, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range pa.Annotations {
		if strings.HasPrefix(k, asconfig.KeepAliveAnnotationKey) {
			t.Errorf("%s's PodAutoscaler has %s: a revision with nothing set must be left as upstream leaves it", off.name, k)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
