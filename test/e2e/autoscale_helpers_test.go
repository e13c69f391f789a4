//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// Constants of upstream's autoscale e2e helpers (test/e2e/autoscale.go).
const (
	asTarget       = 6   // concurrency target per pod
	asRPSTarget    = 10  // rps target per pod
	asUtilization  = 0.7 // target-utilization
	asSleepMs      = 500 // each request sleeps this long in the app
	successRateSLO = 0.999
)

var (
	autoscaleImage = images.AppImage("autoscale")
	revisionGVR    = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "revisions"}
	sksGVR         = schema.GroupVersionResource{Group: "networking.internal.knative.dev", Version: "v1alpha1", Resource: "serverlessservices"}
)

// asSvc is one autoscale test service on the lab.
type asSvc struct {
	t    *testing.T
	name string
	rev  string
	host string
	// utilization and target as annotated, for the pod bounds of the count checks.
	target      float64
	utilization float64
}

// asOptions describe the ksvc: annotations are added to SetupSvc's set (target, target-utilization,
// window 30s) and override them.
type asOptions struct {
	target      int
	metric      string // "" is concurrency
	annotations map[string]string
	cc          int // containerConcurrency; 0 leaves it unset
	skipProbe   bool
}

func autoscaleYAML(name string, ann map[string]string, cc int) string {
	return ksvc.Manifest{Name: name, Namespace: ns, Image: autoscaleImage, Annotations: ann, ContainerConcurrency: cc}.YAML()
}

// setupAutoscaleSvc creates the ksvc, waits for it to be Ready and routable and (unless skipProbe)
// for a first 200, as upstream's SetupSvc does. The ksvc is deleted when the test ends.
func setupAutoscaleSvc(t *testing.T, name string, o asOptions) *asSvc {
	t.Helper()
	target := o.target
	if target == 0 {
		target = asTarget
	}
	ann := map[string]string{
		"autoscaling.knative.dev/class":                         "kpa.autoscaling.knative.dev",
		"autoscaling.knative.dev/target":                        fmt.Sprint(target),
		"autoscaling.knative.dev/target-utilization-percentage": fmt.Sprint(asUtilization * 100),
		"autoscaling.knative.dev/window":                        "30s",
	}
	if o.metric != "" {
		ann["autoscaling.knative.dev/metric"] = o.metric
	}
	for k, v := range o.annotations {
		ann[k] = v
	}
	apply(t, autoscaleYAML(name, ann, o.cc))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ksvc.Delete(ctx, lab.client, ns, name); err != nil {
			t.Logf("delete ksvc %s: %v", name, err)
		}
	})
	ctx := context.Background()
	rev, err := ksvc.WaitReady(ctx, lab.client, ns, name, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	waitRoutable(t, name)
	s := &asSvc{t: t, name: name, rev: rev, host: ksvc.Host(name, ns, stack.Domain),
		target: float64(target), utilization: asUtilization}
	if !o.skipProbe {
		if err := s.probeOK(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s Ready (revision %s)", name, rev)
	return s
}

// probeOK retries one request until it answers 200.
func (s *asSvc) probeOK(ctx context.Context, timeout time.Duration) error {
	c := httpClient()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	err := kube.Poll(ctx, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		resp, err := c.Get(ctx, s.host, "/")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("%d %.100s", resp.Status, resp.Body)
		return resp.Status == 200, nil
	})
	if err != nil {
		return fmt.Errorf("%s never answered 200: %v (last: %s)", s.host, err, last)
	}
	return nil
}

func (s *asSvc) deployment(ctx context.Context) (*appsv1.Deployment, error) {
	return lab.client.Kube.AppsV1().Deployments(ns).Get(ctx, s.rev+"-deployment", metav1.GetOptions{})
}

// readyPods is upstream's numberOfReadyPods: ready replicas, or spec.replicas during a rollout.
func (s *asSvc) readyPods(ctx context.Context) (float64, *appsv1.Deployment, error) {
	d, err := s.deployment(ctx)
	if err != nil {
		return 0, nil, err
	}
	if inRollout(d) {
		return float64(deref32(d.Spec.Replicas)), d, nil
	}
	return float64(d.Status.ReadyReplicas), d, nil
}

func inRollout(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "NewReplicaSetAvailable" {
			return false
		}
	}
	return d.Generation > d.Status.ObservedGeneration || d.Status.UpdatedReplicas < deref32(d.Spec.Replicas)
}

func deref32(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// revisionReplicas returns the Revision's status.desiredReplicas and actualReplicas (-1 when unset)
// and whether it is Ready.
func (s *asSvc) revisionReplicas(ctx context.Context) (desired, actual int64, ready bool, err error) {
	u, err := lab.client.Dynamic.Resource(revisionGVR).Namespace(ns).Get(ctx, s.rev, metav1.GetOptions{})
	if err != nil {
		return -1, -1, false, err
	}
	desired, actual = -1, -1
	if v, ok, _ := unstructured.NestedInt64(u.Object, "status", "desiredReplicas"); ok {
		desired = v
	}
	if v, ok, _ := unstructured.NestedInt64(u.Object, "status", "actualReplicas"); ok {
		actual = v
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, ci := range conds {
		m, _ := ci.(map[string]any)
		if m["type"] == "Ready" {
			ready = m["status"] == "True"
		}
	}
	return desired, actual, ready, nil
}

// readyAddresses lists the ready addresses of a Service's EndpointSlices.
func readyAddresses(ctx context.Context, namespace, service string) ([]string, error) {
	sl, err := lab.client.Kube.DiscoveryV1().EndpointSlices(namespace).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sl.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				out = append(out, e.Addresses...)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// sksMode returns the SKS's spec.mode and spec.numActivators.
func (s *asSvc) sksMode(ctx context.Context) (string, int64, error) {
	u, err := lab.client.Dynamic.Resource(sksGVR).Namespace(ns).Get(ctx, s.rev, metav1.GetOptions{})
	if err != nil {
		return "", 0, err
	}
	mode, _, _ := unstructured.NestedString(u.Object, "spec", "mode")
	n, _, _ := unstructured.NestedInt64(u.Object, "spec", "numActivators")
	return mode, n, nil
}

// waitScaleToZero is upstream's assertScaleDown: the Deployment at 0, no pod left, the Revision Ready.
func (s *asSvc) waitScaleToZero(ctx context.Context, timeout time.Duration) {
	s.t.Helper()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	err := kube.Poll(ctx, time.Second, func(ctx context.Context) (bool, error) {
		d, err := s.deployment(ctx)
		if err != nil {
			return false, nil
		}
		total, _, _ := ksvc.PodCounts(ctx, lab.client, ns, s.name)
		last = fmt.Sprintf("spec.replicas %d, %d pods", deref32(d.Spec.Replicas), total)
		return deref32(d.Spec.Replicas) == 0 && total == 0, nil
	})
	if err != nil {
		s.t.Fatalf("%s did not scale to zero in %s: %s", s.name, timeout, last)
	}
	if _, _, ready, err := s.revisionReplicas(context.Background()); err != nil || !ready {
		s.t.Fatalf("revision %s not Ready after scaling to zero (%v)", s.rev, err)
	}
	s.t.Logf("%s scaled to zero in %s", s.name, time.Since(t0).Round(time.Second))
}

// loadStats counts a load generator's results.
type loadStats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       map[string]int
}

func (l *loadStats) record(status int, body string, err error) {
	if err == nil && status == 200 {
		l.ok.Add(1)
		return
	}
	l.failed.Add(1)
	msg := fmt.Sprint(err)
	if err == nil {
		msg = fmt.Sprintf("%d %.100s", status, strings.TrimSpace(body))
	}
	l.mu.Lock()
	if l.errs == nil {
		l.errs = map[string]int{}
	}
	l.errs[msg]++
	l.mu.Unlock()
}

func (l *loadStats) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d ok, %d failed %v", l.ok.Load(), l.failed.Load(), l.errs)
}

func (l *loadStats) successRate() float64 {
	ok, f := l.ok.Load(), l.failed.Load()
	if ok+f == 0 {
		return 0
	}
	return float64(ok) / float64(ok+f)
}

// generator runs load until its stop; wait returns once every request has ended.
type generator struct {
	stats  loadStats
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (g *generator) stop() *loadStats {
	g.cancel()
	g.wg.Wait()
	return &g.stats
}

// fixedConcurrency keeps n requests of path in flight (upstream's vegeta pacer with n workers).
func fixedConcurrency(host, path string, n int) *generator {
	ctx, cancel := context.WithCancel(context.Background())
	g := &generator{cancel: cancel}
	c := ksvc.NewClient(lab.stack.IngressAddr(), 60*time.Second)
	for range n {
		g.wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := c.Get(context.WithoutCancel(ctx), host, path)
				g.stats.record(resp.Status, resp.Body, err)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	return g
}

// fixedRPS sends rps requests of path per second, each on its own goroutine (an open model, like
// vegeta's constant pacer), bounded by maxInFlight.
func fixedRPS(host, path string, rps, maxInFlight int) *generator {
	ctx, cancel := context.WithCancel(context.Background())
	g := &generator{cancel: cancel}
	c := ksvc.NewClient(lab.stack.IngressAddr(), 60*time.Second)
	sem := make(chan struct{}, maxInFlight)
	g.wg.Go(func() {
		tk := time.NewTicker(time.Second / time.Duration(rps))
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				g.stats.record(0, "", fmt.Errorf("generator: %d requests already in flight", maxInFlight))
				continue
			}
			g.wg.Go(func() {
				defer func() { <-sem }()
				resp, err := c.Get(context.WithoutCancel(ctx), host, path)
				g.stats.record(resp.Status, resp.Body, err)
			})
		}
	})
	return g
}

func sleepPath(ms int) string { return fmt.Sprintf("/?sleep=%d", ms) }

// checkLoadSLO fails the test when a generator's success rate is below slo.
func checkLoadSLO(t *testing.T, what string, st *loadStats, slo float64) {
	t.Helper()
	t.Logf("%s: %s", what, st)
	if st.ok.Load() == 0 {
		t.Errorf("%s: no request succeeded", what)
		return
	}
	if r := st.successRate(); r < slo {
		t.Errorf("%s: success rate %.4f below %.4f: %s", what, r, slo, st)
	}
}

// autoscaleUpToNumPods is upstream's AssertAutoscaleUpToNumPods in quick mode.
func (s *asSvc) autoscaleUpToNumPods(curPods, targetPods float64, metric string, within time.Duration) {
	s.t.Helper()
	s.assertUpToNumPods(curPods, targetPods, metric, within, true)
}

// assertUpToNumPods is upstream's AssertAutoscaleUpToNumPods: load at targetPods×target (concurrency or
// rps); the ready pods must never drop below a rising floor, and reach [targetPods,
// ceil(ceil(targetPods/TU)·1.1)] (quick), or be within [targetPods−1, that] when within ends.
func (s *asSvc) assertUpToNumPods(curPods, targetPods float64, metric string, within time.Duration, quick bool) {
	s.t.Helper()
	minPods := math.Floor(curPods/s.utilization) - 1
	maxPods := math.Ceil(math.Ceil(targetPods/s.utilization) * 1.1)
	var g *generator
	if metric == "rps" {
		g = fixedRPS(s.host, sleepPath(asSleepMs), int(targetPods*s.target), 400)
	} else {
		g = fixedConcurrency(s.host, sleepPath(asSleepMs), int(targetPods*s.target))
	}
	err := s.checkPodScale(targetPods, minPods, maxPods, within, quick)
	st := g.stop()
	checkLoadSLO(s.t, fmt.Sprintf("%s load %v→%v pods", s.name, curPods, targetPods), st, successRateSLO)
	if err != nil {
		s.t.Fatal(err)
	}
}

// In quick mode it returns once targetPods is reached; otherwise it checks until within ends.
func (s *asSvc) checkPodScale(targetPods, minPods, maxPods float64, within time.Duration, quick bool) error {
	t0 := time.Now()
	tk := time.NewTicker(2 * time.Second)
	defer tk.Stop()
	done := time.After(within)
	origMax := maxPods
	ctx := context.Background()
	for {
		select {
		case <-tk.C:
			got, d, err := s.readyPods(ctx)
			if err != nil {
				return err
			}
			if inRollout(d) {
				maxPods = math.Ceil(origMax * 1.2)
			}
			if got < minPods {
				return fmt.Errorf("%s: %v ready pods, want at least %v (scale went down while scaling up)", s.name, got, minPods)
			}
			if quick && got >= targetPods && got <= maxPods {
				s.t.Logf("%s: %v pods (target %v, max %v) after %s", s.name, got, targetPods, maxPods, time.Since(t0).Round(time.Second))
				return nil
			}
			if minPods < targetPods-1 {
				minPods = math.Min(got, targetPods) - 1
			}
		case <-done:
			got, _, err := s.readyPods(ctx)
			if err != nil {
				return err
			}
			if got < targetPods-1 || got > maxPods {
				return fmt.Errorf("%s: %v ready pods after %s, want [%v, %v]", s.name, got, within, targetPods-1, maxPods)
			}
			s.t.Logf("%s: %v pods at the deadline (target %v)", s.name, got, targetPods)
			return nil
		}
	}
}

// poll waits for cond every interval up to timeout; last describes the state for the failure.
func poll(timeout, interval time.Duration, cond func(ctx context.Context) (bool, string)) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	err := kube.Poll(ctx, interval, func(ctx context.Context) (bool, error) {
		ok, l := cond(ctx)
		last = l
		return ok, nil
	})
	return last, err
}
