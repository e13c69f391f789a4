//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// testColdStartLatency measures, over THAW_E2E_COLDSTARTS cold starts spread over
// THAW_E2E_COLDSTART_SERVICES services at once (default 4; 1 measures without contention), the
// time from sending the first request to the Deployment's spec.replicas leaving 0 (upstream's
// deployment-updated-latency, seen from the host through a watch), and the cold request's duration.
func testColdStartLatency(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("THAW_E2E_COLDSTARTS"))
	if err != nil || n <= 0 {
		t.Skip("THAW_E2E_COLDSTARTS unset")
	}
	services := 4
	if v, err := strconv.Atoi(os.Getenv("THAW_E2E_COLDSTART_SERVICES")); err == nil && v > 0 {
		services = v
	}
	var (
		mu              sync.Mutex
		scaled, request []time.Duration
		wg              sync.WaitGroup
	)
	for i := range services {
		runs := n / services
		if i < n%services {
			runs++
		}
		wg.Go(func() {
			t.Run(fmt.Sprintf("svc%d", i), func(t *testing.T) {
				s := setupAutoscaleSvc(t, fmt.Sprintf("as-cold%d", i), asOptions{annotations: map[string]string{
					"autoscaling.knative.dev/window": "6s",
				}})
				for r := range runs {
					up, req := s.coldStart(t)
					t.Logf("cold start %d: /scale after %s, request %s", r, up, req)
					mu.Lock()
					scaled, request = append(scaled, up), append(request, req)
					mu.Unlock()
				}
			})
		})
	}
	wg.Wait()
	t.Logf("%d cold starts: request→spec.replicas>0 %s; cold request %s", len(scaled), quantiles(scaled), quantiles(request))
}

func quantiles(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return fmt.Sprintf("p50 %s p99 %s (min %s max %s)", q(0.5).Round(10*time.Microsecond),
		q(0.99).Round(10*time.Microsecond), d[0].Round(10*time.Microsecond), d[len(d)-1].Round(10*time.Microsecond))
}

// coldStart waits until the revision is at zero with no ready pod, then sends one request and
// returns the time until a watch sees spec.replicas > 0, and the request's duration.
func (s *asSvc) coldStart(t *testing.T) (time.Duration, time.Duration) {
	t.Helper()
	last, err := poll(2*time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, string) {
		d, err := s.deployment(ctx)
		if err != nil {
			return false, err.Error()
		}
		a, err := readyAddresses(ctx, ns, s.rev+"-private")
		return err == nil && deref32(d.Spec.Replicas) == 0 && len(a) == 0,
			fmt.Sprintf("spec.replicas %d, private %v %v", deref32(d.Spec.Replicas), a, err)
	})
	if err != nil {
		t.Fatalf("not at zero: %s", last)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := lab.client.Kube.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", s.rev+"-deployment").String()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// The watch's first event is the current state: drain it before the request.
	first := <-w.ResultChan()
	if d, ok := first.Object.(*appsv1.Deployment); !ok || deref32(d.Spec.Replicas) != 0 {
		t.Fatalf("deployment not at 0 before the request: %v", first.Object)
	}
	reqDone := make(chan time.Duration, 1)
	t0 := time.Now()
	go func() {
		resp, err := httpClient().Get(ctx, s.host, "/")
		if err != nil || resp.Status != 200 {
			t.Errorf("cold request: %v %d", err, resp.Status)
		}
		reqDone <- resp.Duration
	}()
	var up time.Duration
	for ev := range w.ResultChan() {
		if d, ok := ev.Object.(*appsv1.Deployment); ok && deref32(d.Spec.Replicas) > 0 {
			up = time.Since(t0)
			break
		}
	}
	if up == 0 {
		t.Fatal("watch ended before the scale")
	}
	return up, <-reqDone
}
