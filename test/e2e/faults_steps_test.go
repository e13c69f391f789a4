//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	servingclient "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// The same stepped load against upstream's autoscaler and then Thaw's, in one run: the
// PodAutoscaler's desiredScale must settle at the same value on every step, and move within a few
// seconds of upstream's.

const (
	stepsTarget = 2 // per pod, utilization 100%: concurrency c wants ceil(c/2) pods
	// Stable window 10 s (panic window 1 s): a step settles well within stepLen.
	stepsWindow = "10s"
	// Each step's last stepsTail samples give its steady value.
	stepsTail = 5
	// Transition tolerance between the two sides: each side sees a change up to 1 s late through the
	// 1 s scrape, 2 s through the decider's tick and 1 s through the poll here, so up to 4 s apart.
	stepsTransitionTolerance = 4 * time.Second
)

// stepsConcurrency and stepLen: the long version (THAW_E2E_LONG=1) walks 1→5→10→5→1 for 24 s a step
// (about 6 minutes with both sides); the short one goes 1→5→1 for 16 s a step.
func stepsPlan() ([]int, time.Duration) {
	if os.Getenv("THAW_E2E_LONG") == "1" {
		return []int{1, 5, 10, 5, 1}, 24 * time.Second
	}
	return []int{1, 5, 1}, 16 * time.Second
}

// stepSample is the PodAutoscaler's status at one second of a step.
type stepSample struct {
	at              time.Duration // since the step began
	desired, actual int32
}

func TestScaleStepsMatchUpstream(t *testing.T) {
	needLab(t, ns)
	if os.Getenv("THAW_E2E_STEPS") != "1" && os.Getenv("THAW_E2E_LONG") != "1" {
		t.Skip("THAW_E2E_STEPS=1 or THAW_E2E_LONG=1 runs it")
	}
	if len(lab.stack.Paths.ThawSkipped) > 0 {
		t.Fatalf("Thaw's components are not built: %v", lab.stack.Paths.ThawSkipped)
	}
	up, th := stack.UpstreamImages(), stack.ThawImages()
	t.Cleanup(func() {
		if err := lab.stack.Swap(context.Background(), up); err != nil {
			t.Errorf("restoring upstream's components: %v", err)
		} else if err := waitAutoscalerLeads(context.Background(), up["autoscaler"]); err != nil {
			t.Error(err)
		}
	})
	sc := servingClient(t)
	steps, stepLen := stepsPlan()
	swapTo(t, up["autoscaler"], up)
	us := runSteps(t, sc, "fa-steps-upstream", steps, stepLen)
	swapTo(t, th["autoscaler"], th)
	ts := runSteps(t, sc, "fa-steps-thaw", steps, stepLen)
	for i, c := range steps {
		uSteady, uAt := steadyOf(us[i])
		tSteady, tAt := steadyOf(ts[i])
		want := int32((c + stepsTarget - 1) / stepsTarget)
		t.Logf("step %d (concurrency %d, ceil(c/target) = %d): upstream settles at %d after %s, Thaw at %d after %s\n  upstream %s\n  thaw     %s",
			i, c, want, uSteady, uAt, tSteady, tAt, seriesString(us[i]), seriesString(ts[i]))
		if uSteady != tSteady {
			t.Errorf("step %d: steady desiredScale upstream %d, Thaw %d", i, uSteady, tSteady)
		}
		if d := tAt - uAt; d > stepsTransitionTolerance || d < -stepsTransitionTolerance {
			t.Errorf("step %d: Thaw settles %s after the step began, upstream %s: more than %s apart", i, tAt, uAt, stepsTransitionTolerance)
		}
	}
}

// runSteps drives a new ksvc through the concurrency steps and samples its PodAutoscaler's status
// every second.
func runSteps(t *testing.T, sc *servingclient.Clientset, name string, steps []int, stepLen time.Duration) [][]stepSample {
	s := setupAutoscaleSvc(t, name, asOptions{target: stepsTarget, annotations: map[string]string{
		"autoscaling.knative.dev/target-utilization-percentage": "100",
		"autoscaling.knative.dev/window":                        stepsWindow,
	}})
	pc := sc.AutoscalingV1alpha1().PodAutoscalers(ns)
	load := startTimedLoad(s.host, sleepPath(asSleepMs), 0)
	defer load.stop()
	out := make([][]stepSample, len(steps))
	workers := 0
	for i, c := range steps {
		if c > workers {
			load.add(c - workers)
		} else {
			load.remove(workers - c)
		}
		workers = c
		t0 := time.Now()
		tk := time.NewTicker(time.Second)
		for time.Since(t0) < stepLen {
			<-tk.C
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			pa, err := pc.Get(ctx, s.rev, metav1.GetOptions{})
			cancel()
			if err != nil {
				t.Logf("%s: %v", name, err)
				continue
			}
			out[i] = append(out[i], stepSample{time.Since(t0).Round(100 * time.Millisecond),
				scaleOf(pa.Status.DesiredScale), scaleOf(pa.Status.ActualScale)})
		}
		tk.Stop()
	}
	ok, _, fails := load.split(time.Time{}, time.Time{})
	t.Logf("%s: %d requests ok, %d failed %v", name, ok, len(fails), fails)
	return out
}

// steadyOf returns a step's steady desiredScale (the last sample's, when the last stepsTail agree;
// -1 otherwise) and when it was first reached for good.
func steadyOf(ss []stepSample) (int32, time.Duration) {
	if len(ss) == 0 {
		return -1, 0
	}
	v := ss[len(ss)-1].desired
	for _, s := range ss[max(0, len(ss)-stepsTail):] {
		if s.desired != v {
			return -1, 0
		}
	}
	at := ss[0].at
	for i := len(ss) - 1; i >= 0; i-- {
		if ss[i].desired != v {
			break
		}
		at = ss[i].at
	}
	return v, at
}

func seriesString(ss []stepSample) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, " %d/%d", s.desired, s.actual)
	}
	return "desired/actual per second:" + b.String()
}
