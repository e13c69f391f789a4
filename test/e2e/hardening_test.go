//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/swap"
)

// Sturdier components (the issue of the same name), on the lab, with the components
// THAW_E2E_COMPONENTS selects (the mixed fleet always pairs upstream's activator with Thaw's
// autoscaler):
//   - FairQueue: two revisions saturated (container-concurrency 1, one pod, 1 s requests) fill the
//     activator's queue past an activator-wide bound lowered to hdTotalQueue; a cold request to a third
//     revision still waits and is served.
//   - FailFast: a ksvc whose image cannot be pulled and one whose container crashes at start, both at
//     zero: the time from a request to its answer. Thaw answers 503 with the reason and Retry-After
//     within seconds, and serves again once the image exists; upstream holds the request for the
//     revision's timeout (300 s), which the suite caps at hdUpstreamCap (THAW_E2E_LONG=1: the full wait).
//   - MixedFleet: the overlay applied as documented (`kubectl apply -k config/overlays/thaw`) installs
//     the NetworkPolicy on the autoscaler's stats port; its selectors take the live pods, and upstream's
//     activator still scales Thaw's autoscaler's revision from zero. The lab's CNI (bridge) does not
//     enforce NetworkPolicy, so this shows that the policy admits the fleet, not that it refuses others.
//
// The file's name sorts before lab_test.go so that the scenarios run before the teardown test.

const (
	// hdTotalQueue is the activator-wide bound for FairQueue (ACTIVATOR_TOTAL_QUEUE_DEPTH): each of the
	// two saturated revisions may hold 30/3 = 10 waiters, and a third still finds room.
	hdTotalQueue = 30
	// hdWorkers per saturated revision: well over its share, so it sheds.
	hdWorkers = 25
	// hdSleepMs is how long each saturating request holds its pod.
	hdSleepMs = 1000
	// hdFailFastWithin bounds Thaw's time from a request to the 503 for a revision that cannot start:
	// the pod's creation, the kubelet's first failure, the PodAutoscaler and the Revision updated.
	hdFailFastWithin = 20 * time.Second
	// hdUpstreamCap caps the wait for upstream's answer in the suite.
	hdUpstreamCap = 30 * time.Second
	// hdRecoverWithin bounds the recovery once the missing image exists: the kubelet retries a pull
	// after a back-off of 10 s, then 20 s.
	hdRecoverWithin = 60 * time.Second
	// hdBadImage is never built: pulling it fails (no registry).
	hdBadImage = images.Registry + "/e2e/sturdy-missing:v1"
)

func TestSturdy(t *testing.T) {
	needLab(t, ns)
	which := useComponents(t)
	restoreDeployments(t)
	setActivatorEnv(t, "ACTIVATOR_TOTAL_QUEUE_DEPTH", strconv.Itoa(hdTotalQueue))
	for _, sc := range []struct {
		name string
		run  func(*testing.T, string)
	}{
		{"FairQueue", testFairQueue},
		{"FailFast", testFailFast},
		{"MixedFleet", testMixedFleet},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t0 := time.Now()
			sc.run(t, which)
			t.Logf("%s (%s) took %s", sc.name, which, time.Since(t0).Round(time.Second))
		})
	}
}

// restoreDeployments puts the activator's and autoscaler's pod templates back as they are now when
// the test ends (before the components are swapped back), whatever the scenarios changed.
func restoreDeployments(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	saved := map[string]corev1.PodTemplateSpec{}
	for _, c := range swap.Components {
		d, err := lab.client.Kube.AppsV1().Deployments(swap.Namespace).Get(ctx, c, getOpts())
		if err != nil {
			t.Fatal(err)
		}
		saved[c] = *d.Spec.Template.DeepCopy()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for c, tpl := range saved {
			d, err := lab.client.Kube.AppsV1().Deployments(swap.Namespace).Get(ctx, c, getOpts())
			if err != nil {
				t.Errorf("restore %s: %v", c, err)
				continue
			}
			d.Spec.Template = tpl
			if _, err := lab.client.Kube.AppsV1().Deployments(swap.Namespace).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
				t.Errorf("restore %s: %v", c, err)
			}
		}
		if err := lab.client.WaitDeployments(ctx, swap.Namespace, swap.Components...); err != nil {
			t.Errorf("restored Deployments not rolled out: %v", err)
		}
	})
}

// setActivatorEnv sets one variable on the activator container and waits for the rollout.
func setActivatorEnv(t *testing.T, name, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"activator","env":[{"name":%q,"value":%q}]}]}}}}`, name, value)
	if _, err := lab.client.Kube.AppsV1().Deployments(swap.Namespace).Patch(ctx, "activator", types.StrategicMergePatchType,
		[]byte(p), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := lab.client.WaitDeployments(ctx, swap.Namespace, "activator"); err != nil {
		t.Fatal(err)
	}
	t.Logf("activator %s=%s rolled out in %s", name, value, time.Since(t0).Round(time.Millisecond))
}

// saturator keeps workers requests on one revision and counts the answers; a refused request (503)
// is retried after a pause, so shedding does not spin.
type saturator struct {
	host            string
	ok, shed, other atomic.Int64
	mu              sync.Mutex
	lastOther       string
	cancel          context.CancelFunc
	wg              sync.WaitGroup
}

func saturate(host, path string, workers int) *saturator {
	ctx, cancel := context.WithCancel(context.Background())
	s := &saturator{host: host, cancel: cancel}
	c := ksvc.NewClient(lab.stack.IngressAddr(), time.Minute)
	for range workers {
		s.wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := c.Get(ctx, host, path)
				switch {
				case ctx.Err() != nil:
					return
				case err == nil && resp.Status == 200:
					s.ok.Add(1)
					continue
				case err == nil && resp.Status == 503 && strings.Contains(resp.Body, "queue full"):
					s.shed.Add(1)
				default:
					s.other.Add(1)
					s.mu.Lock()
					s.lastOther = fmt.Sprintf("%d %.100s %v", resp.Status, strings.TrimSpace(resp.Body), err)
					s.mu.Unlock()
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
	return s
}

func (s *saturator) stop() string {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%s: %d served, %d refused (queue full), %d other (last: %s)", s.host, s.ok.Load(), s.shed.Load(), s.other.Load(), s.lastOther)
}

// sturdySvc applies a ksvc of the autoscale app (or of image), deleted when the test ends.
func sturdySvc(t *testing.T, name, image string, ann map[string]string, cc int, env map[string]string) {
	t.Helper()
	if image == "" {
		image = autoscaleImage
	}
	y := ksvc.Manifest{Name: name, Namespace: ns, Image: image, Annotations: ann, ContainerConcurrency: cc}.YAML()
	if len(env) > 0 {
		// The manifest's container ends with its readiness probe: the env goes after it.
		y += "        env:\n"
		for k, v := range env {
			y += fmt.Sprintf("        - {name: %s, value: %q}\n", k, v)
		}
	}
	apply(t, y)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ksvc.Delete(ctx, lab.client, ns, name); err != nil {
			t.Logf("delete ksvc %s: %v", name, err)
		}
	})
}

// readyAndRoutable waits for each ksvc to be Ready and its Services programmed, at once.
func readyAndRoutable(t *testing.T, names ...string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Go(func() {
			if _, err := ksvc.WaitReady(context.Background(), lab.client, ns, n, 90*time.Second); err != nil {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		waitRoutable(t, n)
	}
}

// zero is the annotation set of a revision that starts at zero (the lab allows initial-scale 0), so
// it is Ready without ever having started a pod.
func zero() map[string]string {
	return map[string]string{"autoscaling.knative.dev/initial-scale": "0", "autoscaling.knative.dev/window": "6s"}
}

func testFairQueue(t *testing.T, which string) {
	busy := map[string]string{
		"autoscaling.knative.dev/min-scale":             "1",
		"autoscaling.knative.dev/max-scale":             "1",
		"autoscaling.knative.dev/target-burst-capacity": "-1", // the activator stays in the path
	}
	sturdySvc(t, "sturdy-busy-a", "", busy, 1, nil)
	sturdySvc(t, "sturdy-busy-b", "", busy, 1, nil)
	sturdySvc(t, "sturdy-cold", "", zero(), 0, nil)
	readyAndRoutable(t, "sturdy-busy-a", "sturdy-busy-b", "sturdy-cold")
	if total, _, err := ksvc.PodCounts(context.Background(), lab.client, ns, "sturdy-cold"); err != nil || total != 0 {
		t.Fatalf("sturdy-cold has %d pods (%v), want none before the cold request", total, err)
	}

	a := saturate(ksvc.Host("sturdy-busy-a", ns, stack.Domain), sleepPath(hdSleepMs), hdWorkers)
	b := saturate(ksvc.Host("sturdy-busy-b", ns, stack.Domain), sleepPath(hdSleepMs), hdWorkers)
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			t.Log(a.stop())
			t.Log(b.stop())
		}
	}
	defer stopAll()
	// Both queues over their share: the activator-wide bound is in play.
	last, err := poll(20*time.Second, 200*time.Millisecond, func(context.Context) (bool, string) {
		return a.shed.Load() > 0 && b.shed.Load() > 0, fmt.Sprintf("refused: a %d, b %d; served: a %d, b %d",
			a.shed.Load(), b.shed.Load(), a.ok.Load(), b.ok.Load())
	})
	switch {
	case err == nil:
		t.Logf("both saturated revisions refuse requests over their share (%s)", last)
	case which == "thaw":
		t.Fatalf("the saturated revisions never filled their share of %d waiting requests: %s", hdTotalQueue, last)
	default:
		// Upstream's activator has no activator-wide bound: its queues (10000 each) take everything.
		t.Logf("%s: no request refused (%s)", which, last)
	}
	shedBefore := a.shed.Load() + b.shed.Load()

	c := ksvc.NewClient(lab.stack.IngressAddr(), 45*time.Second)
	resp, err := c.Get(context.Background(), ksvc.Host("sturdy-cold", ns, stack.Domain), "/")
	shedDuring := a.shed.Load() + b.shed.Load() - shedBefore
	stopAll()
	if err != nil || resp.Status != 200 {
		t.Fatalf("cold request to a third revision while two saturate the activator: %d %.200q %v", resp.Status, resp.Body, err)
	}
	t.Logf("cold request to a third revision served: %d in %s, while the saturated ones had %d requests refused meanwhile",
		resp.Status, resp.Duration.Round(time.Millisecond), shedDuring)
}

// ctr runs containerd's client on the lab's node, in the CRI namespace.
func ctr(ctx context.Context, args ...string) error {
	full := append([]string{"--address", lab.stack.Lab.Cfg.ContainerdSock(), "--namespace", images.Namespace}, args...)
	out, err := exec.CommandContext(ctx, lab.stack.Paths.Ctr, full...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// timedAnswer is one request's outcome.
type timedAnswer struct {
	name string
	resp ksvc.Response
	err  error
	took time.Duration
}

func testFailFast(t *testing.T, which string) {
	ctx := context.Background()
	// A name no image has (a previous run may have left the tag).
	_ = ctr(ctx, "images", "rm", hdBadImage)
	t.Cleanup(func() { _ = ctr(context.Background(), "images", "rm", hdBadImage) })
	sturdySvc(t, "sturdy-badimage", hdBadImage, zero(), 0, nil)
	// The Go runtime refuses a malformed GOMEMLIMIT before main: the container exits with code 2 at once.
	sturdySvc(t, "sturdy-crash", "", zero(), 0, map[string]string{"GOMEMLIMIT": "bogus"})
	readyAndRoutable(t, "sturdy-badimage", "sturdy-crash")

	wait := hdUpstreamCap
	if which == "thaw" {
		wait = 2 * hdFailFastWithin
	}
	if os.Getenv("THAW_E2E_LONG") == "1" {
		wait = 330 * time.Second // past the revision's default timeout of 300 s
	}
	c := ksvc.NewClient(lab.stack.IngressAddr(), wait)
	answers := make([]timedAnswer, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"sturdy-badimage", "sturdy-crash"} {
		wg.Go(func() {
			t0 := time.Now()
			resp, err := c.Get(ctx, ksvc.Host(name, ns, stack.Domain), "/")
			answers[i] = timedAnswer{name: name, resp: resp, err: err, took: time.Since(t0)}
		})
	}
	wg.Wait()
	wantReason := map[string][]string{"sturdy-badimage": {"ErrImagePull", "ImagePullBackOff"}, "sturdy-crash": {"CrashLoopBackOff", "ExitCode"}}
	for _, a := range answers {
		if a.err != nil {
			t.Logf("%s (%s): no answer after %s (> %s): %v", a.name, which, a.took.Round(time.Millisecond), wait, a.err)
		} else {
			t.Logf("%s (%s): %d after %s, Retry-After %q: %.300s", a.name, which, a.resp.Status,
				a.took.Round(time.Millisecond), a.resp.Header.Get("Retry-After"), strings.TrimSpace(a.resp.Body))
		}
		if which != "thaw" {
			continue
		}
		if a.err != nil || a.resp.Status != 503 || a.took > hdFailFastWithin || !strings.Contains(a.resp.Body, "cannot start") {
			t.Errorf("%s: want 503 \"cannot start\" within %s, got %d after %s (%v)", a.name, hdFailFastWithin, a.resp.Status, a.took, a.err)
			continue
		}
		found := false
		for _, r := range wantReason[a.name] {
			found = found || strings.Contains(a.resp.Body, r)
		}
		if !found {
			t.Errorf("%s: the 503 does not name %v: %q", a.name, wantReason[a.name], a.resp.Body)
		}
		if ra, err := strconv.Atoi(a.resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
			t.Errorf("%s: Retry-After %q, want a few seconds", a.name, a.resp.Header.Get("Retry-After"))
		}
	}
	if which != "thaw" || t.Failed() {
		return
	}

	// The image appears (pushed, in a real cluster): the kubelet's next pull succeeds and the revision
	// serves again, with no change to the ksvc.
	t0 := time.Now()
	if err := ctr(ctx, "images", "tag", "--force", autoscaleImage, hdBadImage); err != nil {
		t.Fatal(err)
	}
	fast := 0
	last, err := poll(hdRecoverWithin, time.Second, func(ctx context.Context) (bool, string) {
		resp, err := c.Get(ctx, ksvc.Host("sturdy-badimage", ns, stack.Domain), "/")
		if err == nil && resp.Status == 503 && strings.Contains(resp.Body, "cannot start") {
			fast++
		}
		return err == nil && resp.Status == 200, fmt.Sprintf("%d %.200s %v", resp.Status, strings.TrimSpace(resp.Body), err)
	})
	if err != nil {
		t.Fatalf("sturdy-badimage not serving %s after its image appeared: %s", hdRecoverWithin, last)
	}
	t.Logf("sturdy-badimage served %s after its image appeared (%d fast 503s before)", time.Since(t0).Round(time.Millisecond), fast)
}

func testMixedFleet(t *testing.T, _ string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The documented install: the overlay, client-side applied (Thaw's images and the NetworkPolicy).
	cmd := exec.CommandContext(ctx, lab.stack.Paths.Kubectl, "apply", "-k", filepath.Join(lab.repo, "config", "overlays", "thaw"))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+lab.stack.Lab.Cfg.Kubeconfig())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply -k config/overlays/thaw: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		err := lab.client.Kube.NetworkingV1().NetworkPolicies(swap.Namespace).Delete(context.Background(), "autoscaler-stats", metav1.DeleteOptions{})
		if err != nil {
			t.Errorf("delete the NetworkPolicy: %v", err)
		}
	})
	if err := swap.Wait(ctx, lab.client.Kube, swap.Images(stack.ThawImages()), swap.Options{Timeout: 3 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	// A rollout in progress: upstream's activator in front of Thaw's autoscaler.
	mixed := map[string]string{"activator": images.KnativeImage("activator"), "autoscaler": images.ThawImage("autoscaler")}
	swapTo(t, mixed["autoscaler"], mixed)

	np, err := lab.client.Kube.NetworkingV1().NetworkPolicies(swap.Namespace).Get(ctx, "autoscaler-stats", getOpts())
	if err != nil {
		t.Fatalf("the overlay did not install the NetworkPolicy: %v", err)
	}
	selects := func(sel *metav1.LabelSelector, app string) {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		pods, err := lab.client.Kube.CoreV1().Pods(swap.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("no %s pods: %v", app, err)
		}
		for _, p := range pods.Items {
			if !s.Matches(labels.Set(p.Labels)) {
				t.Errorf("pod %s (%s) is not selected by %s", p.Name, p.Spec.Containers[0].Image, s)
			}
		}
	}
	selects(&np.Spec.PodSelector, "autoscaler")
	admitted := map[string]bool{}
	for _, rule := range np.Spec.Ingress {
		for _, port := range rule.Ports {
			if port.Port == nil || port.Port.IntValue() != 8080 {
				continue
			}
			for _, from := range rule.From {
				if from.PodSelector == nil {
					continue
				}
				for _, app := range []string{"activator", "autoscaler"} {
					if s, err := metav1.LabelSelectorAsSelector(from.PodSelector); err == nil && s.Matches(labels.Set{"app": app}) {
						selects(from.PodSelector, app)
						admitted[app] = true
					}
				}
			}
		}
	}
	if !admitted["activator"] || !admitted["autoscaler"] {
		t.Fatalf(":8080 admits %v, want the activator and autoscaler pods", admitted)
	}

	// Scale from zero needs the activator's stat to reach the autoscaler over :8080.
	sturdySvc(t, "sturdy-mixed", "", zero(), 0, nil)
	readyAndRoutable(t, "sturdy-mixed")
	resp, err := ksvc.NewClient(lab.stack.IngressAddr(), 45*time.Second).Get(ctx, ksvc.Host("sturdy-mixed", ns, stack.Domain), "/")
	if err != nil || resp.Status != 200 {
		t.Fatalf("cold request with upstream's activator and Thaw's autoscaler: %d %.200q %v", resp.Status, resp.Body, err)
	}
	t.Logf("upstream's activator → Thaw's autoscaler with the NetworkPolicy installed: cold request %d in %s "+
		"(the lab's bridge CNI does not enforce NetworkPolicy: this shows the policy admits the fleet, not that it refuses others)",
		resp.Status, resp.Duration.Round(time.Millisecond))
}
