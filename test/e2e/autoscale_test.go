//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// The autoscale scenarios of upstream's e2e suite (test/e2e/autoscale_test.go, activator_test.go),
// scaled to the lab: they run with the activator and autoscaler THAW_E2E_COMPONENTS selects
// ("thaw", the default, or "upstream"), and put upstream's back afterwards for the tests that follow.
// THAW_E2E_LONG=1 adds the long ones (counting pods 1→4, sustaining load for 2 minutes).

// components returns the selected activator and autoscaler images.
func components(t *testing.T) (string, swap.Images) {
	switch c := os.Getenv("THAW_E2E_COMPONENTS"); c {
	case "", "thaw":
		if len(lab.stack.Paths.ThawSkipped) > 0 {
			t.Fatalf("Thaw's components are not built: %v", lab.stack.Paths.ThawSkipped)
		}
		return "thaw", stack.ThawImages()
	case "upstream":
		return "upstream", stack.UpstreamImages()
	default:
		t.Fatalf("THAW_E2E_COMPONENTS=%q: want thaw or upstream", c)
		return "", nil
	}
}

// scenario is one autoscale test.
type scenario struct {
	name string
	run  func(t *testing.T)
	long bool
}

// TestAutoscale swaps the selected components in, then runs the scenarios in waves; the scenarios of a
// wave run at once (upstream runs them in parallel too), sized so a wave's pods fit 2 cores.
func TestAutoscale(t *testing.T) {
	needLab(t, ns)
	ctx := context.Background()
	which, im := components(t)
	// Put upstream's back for the tests that follow, also after a failed swap.
	t.Cleanup(func() {
		up := stack.UpstreamImages()
		if err := lab.stack.Swap(context.Background(), up); err != nil {
			t.Errorf("restoring upstream's components: %v", err)
		} else if err := waitAutoscalerLeads(context.Background(), up["autoscaler"]); err != nil {
			t.Error(err)
		}
	})
	t0 := time.Now()
	if err := lab.stack.Swap(ctx, im); err != nil {
		t.Fatal(err)
	}
	// The new autoscaler leads only once the old one's Lease is released or expires: the first
	// scenarios would measure that handoff instead of the autoscaler.
	if err := waitAutoscalerLeads(ctx, im["autoscaler"]); err != nil {
		t.Fatal(err)
	}
	t.Logf("autoscale scenarios with %s's activator and autoscaler (%s, swapped in and leading in %s)", which, im, time.Since(t0).Round(time.Millisecond))
	long := os.Getenv("THAW_E2E_LONG") == "1"
	waves := [][]scenario{
		{
			{name: "UpDownUp/linear", run: func(t *testing.T) { testUpDownUp(t, "linear") }},
			{name: "UpDownUp/weighted-exponential", run: func(t *testing.T) { testUpDownUp(t, "weighted-exponential") }},
			{name: "FastScaleToZero", run: testFastScaleToZero},
			{name: "MinScale", run: testMinScale},
			{name: "InitialScale", run: testInitialScale},
		},
		{
			{name: "TargetBurstCapacity", run: testTargetBurstCapacity},
			{name: "ActivationScale", run: testActivationScale},
			{name: "NoLossAcrossZero", run: func(t *testing.T) {
				testNoLossAcrossZero(t, "", []string{"zero+0s", "zero+3s", "zero+6s"})
			}},
			{name: "NoLossAcrossZeroTBC0", run: func(t *testing.T) {
				testNoLossAcrossZero(t, "0", []string{"proxy", "zero+0s", "proxy", "zero+1s"})
			}},
		},
		{
			{name: "ActivatorOverload", run: testActivatorOverload},
			{name: "RPSUpCountPods", run: testRPSUp},
			{name: "TargetBurstCapacityMinusOne", run: testTBCMinusOne},
			{name: "TargetBurstCapacityZero", run: testTBCZero},
		},
		{
			{name: "UpCountPods", run: testUpCountPods, long: true},
			{name: "Sustaining", run: testSustaining, long: true},
		},
		{
			{name: "ColdStartLatency", run: testColdStartLatency},
		},
	}
	for _, w := range waves {
		var wg sync.WaitGroup
		for _, sc := range w {
			if sc.long && !long {
				continue
			}
			// t.Run from several goroutines runs the subtests at once, whatever -parallel says.
			wg.Go(func() {
				t.Run(sc.name, func(t *testing.T) {
					t0 := time.Now()
					sc.run(t)
					t.Logf("%s (%s) took %s", sc.name, which, time.Since(t0).Round(time.Second))
				})
			})
		}
		wg.Wait()
	}
}

// waitAutoscalerLeads waits until the autoscaler Lease's holder is a live pod running image.
func waitAutoscalerLeads(ctx context.Context, image string) error {
	last, err := poll(time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		l, err := lab.client.Kube.CoordinationV1().Leases("knative-serving").Get(ctx, "autoscaler-bucket-00-of-01", getOpts())
		if err != nil || l.Spec.HolderIdentity == nil {
			return false, fmt.Sprint("lease: ", err)
		}
		holder := *l.Spec.HolderIdentity
		pods, err := lab.client.Kube.CoreV1().Pods("knative-serving").List(ctx, metav1.ListOptions{LabelSelector: "app=autoscaler"})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Spec.Containers[0].Image == image && strings.HasPrefix(holder, p.Name+"_") {
				return true, holder
			}
		}
		return false, "lease held by " + holder
	})
	if err != nil {
		return fmt.Errorf("the %s autoscaler never took the lease: %s", image, last)
	}
	return nil
}

// svcName makes a ksvc name from a scenario's name.
func svcName(t *testing.T) string {
	n := strings.ToLower(t.Name())
	n = n[strings.LastIndex(n, "/")+1:]
	n = strings.NewReplacer("_", "-", ".", "-").Replace(n)
	return "as-" + n
}

// testUpDownUp: 1→2 pods at fixed concurrency, to 0 with the Revision Ready, then 0→2.
func testUpDownUp(t *testing.T, algo string) {
	s := setupAutoscaleSvc(t, "as-updownup-"+strings.Split(algo, "-")[0], asOptions{annotations: map[string]string{
		"autoscaling.knative.dev/metric-aggregation-algorithm": algo,
	}})
	s.autoscaleUpToNumPods(1, 2, "", 90*time.Second)
	s.waitScaleToZero(context.Background(), 3*time.Minute)
	s.autoscaleUpToNumPods(0, 2, "", 90*time.Second)
}

// testFastScaleToZero: TBC −1 and a 6 s window ⇒ the private endpoints are empty within grace+15 s.
func testFastScaleToZero(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{annotations: map[string]string{
		"autoscaling.knative.dev/target-burst-capacity": "-1",
		"autoscaling.knative.dev/window":                "6s",
	}})
	t0 := time.Now()
	const grace = 6 * time.Second // the suite's scale-to-zero-grace-period
	// An EndpointSlice not yet populated is empty too: first see the pod in it.
	seen := false
	last, err := poll(grace+15*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		a, err := readyAddresses(ctx, ns, s.rev+"-private")
		if err == nil && len(a) > 0 && !seen {
			seen = true
			t.Logf("pod in the private endpoints %s after the first request", time.Since(t0).Round(time.Millisecond))
		}
		return err == nil && seen && len(a) == 0, fmt.Sprint(a, err)
	})
	if err != nil {
		t.Fatalf("private endpoints of %s not empty within %s: %s", s.rev, grace+15*time.Second, last)
	}
	t.Logf("private endpoints empty %s after the first request", time.Since(t0).Round(time.Millisecond))
}

// testMinScale: min-scale 2 keeps 2 ready pods well past the window and grace period.
func testMinScale(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{annotations: map[string]string{
		"autoscaling.knative.dev/min-scale": "2",
		"autoscaling.knative.dev/window":    "6s",
	}})
	ctx := context.Background()
	// The Revision is Ready only with min-scale pods up.
	if got, _, err := s.readyPods(ctx); err != nil || got != 2 {
		t.Fatalf("%v ready pods once Ready, want 2 (%v)", got, err)
	}
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		d, err := s.deployment(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if deref32(d.Spec.Replicas) != 2 || d.Status.ReadyReplicas < 2 {
			t.Fatalf("min-scale 2: spec.replicas %d, %d ready", deref32(d.Spec.Replicas), d.Status.ReadyReplicas)
		}
		time.Sleep(time.Second)
	}
}

// testInitialScale: initial-scale 3 starts at 3 pods, then scales below without traffic. As upstream's
// TestInitScalePositive, terminating pods count at Ready time: without traffic the autoscaler may
// scale down as soon as the scale target is initialised, before the ksvc reports Ready.
func testInitialScale(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{skipProbe: true, annotations: map[string]string{
		"autoscaling.knative.dev/initial-scale": "3",
		"autoscaling.knative.dev/window":        "6s",
	}})
	pods, err := lab.client.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "serving.knative.dev/service=" + s.name, FieldSelector: "status.phase!=Pending"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pods.Items); n != 3 {
		t.Fatalf("%d started pods once Ready, want 3", n)
	}
	last, err := poll(90*time.Second, time.Second, func(ctx context.Context) (bool, string) {
		total, _, err := ksvc.PodCounts(ctx, lab.client, ns, s.name)
		if err != nil {
			return false, err.Error()
		}
		live := activePods(ctx, t, s.name)
		return live < 3, fmt.Sprintf("%d pods, %d not terminating", total, live)
	})
	if err != nil {
		t.Fatalf("initial-scale 3 never scaled below 3: %s", last)
	}
}

// testTargetBurstCapacity: soft target 10 (TU 70%), TBC 7, panic 200%: at concurrency 7 the activator
// is in the public endpoints; at 12 there are exactly 2 ready pods and the public endpoints hold just
// them (Serve mode).
func testTargetBurstCapacity(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{target: 10, annotations: map[string]string{
		"autoscaling.knative.dev/target-burst-capacity":      "7",
		"autoscaling.knative.dev/panic-threshold-percentage": "200",
	}})
	g1 := fixedConcurrency(s.host, sleepPath(asSleepMs), 7)
	defer func() { checkLoadSLO(t, "TBC load 7", g1.stop(), successRateSLO) }()
	last, err := poll(time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		return s.activatorInPublic(ctx)
	})
	if err != nil {
		t.Fatalf("activator never in the public endpoints at concurrency 7: %s", last)
	}
	t.Logf("at concurrency 7: %s", last)
	g2 := fixedConcurrency(s.host, sleepPath(asSleepMs), 5)
	defer func() { checkLoadSLO(t, "TBC load +5", g2.stop(), successRateSLO) }()
	// upstream waits up to twice the stable window (60 s by default).
	last, err = poll(2*time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		got, _, err := s.readyPods(ctx)
		return err == nil && got == 2, fmt.Sprint(got, err)
	})
	if err != nil {
		t.Fatalf("never exactly 2 ready pods at concurrency 12: last %s", last)
	}
	last, err = poll(2*time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		a, err := readyAddresses(ctx, ns, s.rev)
		mode, _, _ := s.sksMode(ctx)
		return err == nil && len(a) == 2, fmt.Sprintf("public %v (SKS mode %s) %v", a, mode, err)
	})
	if err != nil {
		t.Errorf("public endpoints never exactly the 2 pods: %s", last)
	} else {
		t.Logf("at concurrency 12: %s", last)
	}
}

// activatorInPublic reports whether the revision's public endpoints hold activator addresses only
// (upstream's waitForActivatorEndpoints).
func (s *asSvc) activatorInPublic(ctx context.Context) (bool, string) {
	act, err := readyAddresses(ctx, "knative-serving", "activator-service")
	if err != nil || len(act) == 0 {
		return false, fmt.Sprint("activator endpoints ", act, err)
	}
	pub, err := readyAddresses(ctx, ns, s.rev)
	if err != nil || len(pub) == 0 {
		return false, fmt.Sprint("public endpoints ", pub, err)
	}
	for _, a := range pub {
		if !slices.Contains(act, a) {
			return false, fmt.Sprintf("public %v, activators %v", pub, act)
		}
	}
	return true, fmt.Sprintf("public %v = activators %v", pub, act)
}

// testActivationScale: activation-scale 5 ⇒ after a cold request the Revision's desiredReplicas is 5.
func testActivationScale(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{target: 6, annotations: map[string]string{
		"autoscaling.knative.dev/activation-scale": "5",
		// Shorter than SetupSvc's 30 s, to reach zero sooner.
		"autoscaling.knative.dev/window": "10s",
	}})
	ctx := context.Background()
	s.waitScaleToZero(ctx, 2*time.Minute)
	if err := s.probeOK(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	last, err := poll(time.Minute, time.Second, func(ctx context.Context) (bool, string) {
		d, a, _, err := s.revisionReplicas(ctx)
		return err == nil && d == 5, fmt.Sprintf("desired %d actual %d %v", d, a, err)
	})
	if err != nil {
		t.Fatalf("desiredReplicas never 5 after the cold request: %s", last)
	}
}

// testActivatorOverload: CC=1, max-scale 10, TBC −1: 100 concurrent 300 ms requests all answer 200.
func testActivatorOverload(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{cc: 1, annotations: map[string]string{
		"autoscaling.knative.dev/max-scale":             "10",
		"autoscaling.knative.dev/target-burst-capacity": "-1",
	}})
	c := httpClient()
	var wg sync.WaitGroup
	var st loadStats
	t0 := time.Now()
	for range 100 {
		wg.Go(func() {
			resp, err := c.Get(context.Background(), s.host, sleepPath(300))
			st.record(resp.Status, resp.Body, err)
		})
	}
	wg.Wait()
	t.Logf("100 concurrent requests in %s: %s", time.Since(t0).Round(time.Millisecond), &st)
	if st.failed.Load() > 0 {
		t.Errorf("not all 200: %s", &st)
	}
}

// testRPSUp: the rps metric scales 1→2 at 2×10 rps.
func testRPSUp(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{target: asRPSTarget, metric: "rps"})
	s.autoscaleUpToNumPods(1, 2, "rps", 90*time.Second)
}

// testNoLossAcrossZero: load arriving while the revision scales to zero and from zero succeeds 100%.
// Each trigger starts a 5 s load at one moment of the way down: "proxy" when the SKS turns to Proxy
// mode (the public endpoints move from the pods to the activator; with TBC 0 the SKS serves directly
// until then), "zero+<n>s" n seconds after the Deployment is patched to 0 (pods terminating, or none).
func testNoLossAcrossZero(t *testing.T, tbc string, triggers []string) {
	ann := map[string]string{"autoscaling.knative.dev/window": "6s"}
	if tbc != "" {
		ann["autoscaling.knative.dev/target-burst-capacity"] = tbc
	}
	s := setupAutoscaleSvc(t, svcName(t), asOptions{annotations: ann})
	ctx := context.Background()
	var total loadStats
	for i, trig := range triggers {
		// Idle until the trigger, watching the Deployment's spec.replicas and the SKS mode.
		last, err := poll(2*time.Minute, 50*time.Millisecond, func(ctx context.Context) (bool, string) {
			d, err := s.deployment(ctx)
			if err != nil {
				return false, err.Error()
			}
			mode, _, err := s.sksMode(ctx)
			if err != nil {
				return false, err.Error()
			}
			n := deref32(d.Spec.Replicas)
			st := fmt.Sprintf("spec.replicas %d, SKS %s", n, mode)
			if trig == "proxy" {
				return n > 0 && mode == "Proxy", st
			}
			return n == 0, st
		})
		if err != nil {
			t.Fatalf("%s: never reached: %s", trig, last)
		}
		var delay time.Duration
		if after, ok := strings.CutPrefix(trig, "zero+"); ok {
			delay, _ = time.ParseDuration(after)
		}
		time.Sleep(delay)
		total0, ready0, _ := countPods(ctx, s.name)
		g := fixedConcurrency(s.host, sleepPath(100), 4)
		time.Sleep(5 * time.Second)
		st := g.stop()
		t.Logf("cycle %d (%s): load from %d pods (%d ready): %s", i, trig, total0, ready0, st)
		total.ok.Add(st.ok.Load())
		total.failed.Add(st.failed.Load())
		if st.failed.Load() > 0 {
			t.Errorf("cycle %d (%s): requests lost: %s", i, trig, st)
		}
	}
	checkLoadSLO(t, "across scale to and from zero", &total, 1.0)
}

// testTBCMinusOne: with TBC −1 the activator stays the public endpoints, even at 2 pods.
func testTBCMinusOne(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{target: 10, annotations: map[string]string{
		"autoscaling.knative.dev/target-burst-capacity": "-1",
	}})
	last, err := poll(time.Minute, 250*time.Millisecond, s.activatorInPublic)
	if err != nil {
		t.Fatalf("activator never in the public endpoints: %s", last)
	}
	g := fixedConcurrency(s.host, sleepPath(asSleepMs), 12)
	defer func() { checkLoadSLO(t, "TBC -1 load 12", g.stop(), successRateSLO) }()
	last, err = poll(2*time.Minute, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		got, _, err := s.readyPods(ctx)
		return err == nil && got >= 2, fmt.Sprint(got, err)
	})
	if err != nil {
		t.Fatalf("never 2 ready pods at concurrency 12: last %s", last)
	}
	for range 10 {
		if ok, st := s.activatorInPublic(context.Background()); !ok {
			t.Fatalf("TBC -1 at 2 pods: activator left the path: %s", st)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// testTBCZero: with TBC 0 (activator out of the path while pods serve) and a 10 s window, the ready
// replicas reach 0 within a minute, and a cold request then succeeds.
func testTBCZero(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{target: 10, annotations: map[string]string{
		"autoscaling.knative.dev/target-burst-capacity": "0",
		"autoscaling.knative.dev/window":                "10s",
	}})
	last, err := poll(time.Minute, time.Second, func(ctx context.Context) (bool, string) {
		d, err := s.deployment(ctx)
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ReadyReplicas == 0, fmt.Sprintf("%d ready", d.Status.ReadyReplicas)
	})
	if err != nil {
		t.Fatalf("TBC 0: not scaled down within a minute: %s", last)
	}
	s.waitScaleToZero(context.Background(), time.Minute)
	if err := s.probeOK(context.Background(), time.Minute); err != nil {
		t.Fatalf("cold request after TBC 0 scale-down: %v", err)
	}
}

func countPods(ctx context.Context, service string) (int, int, error) {
	pods, err := lab.client.Kube.CoreV1().Pods(ns).List(ctx, listOpts(service))
	if err != nil {
		return 0, 0, err
	}
	ready := 0
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" && p.DeletionTimestamp == nil {
				ready++
			}
		}
	}
	return len(pods.Items), ready, nil
}

// testUpCountPods (long): 1→2→3→4 pods at steady concurrency, each step within 90 s.
func testUpCountPods(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{})
	for p := 1.0; p < 4; p++ {
		s.autoscaleUpToNumPods(p, p+1, "", 90*time.Second)
	}
}

// testSustaining (long): concurrency for 4 pods held for 2 minutes; the scale must hold within
// upstream's bounds throughout.
func testSustaining(t *testing.T) {
	s := setupAutoscaleSvc(t, svcName(t), asOptions{})
	s.assertUpToNumPods(1, 4, "", 2*time.Minute, false)
}
