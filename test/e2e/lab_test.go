//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// Tests run in file order and share the lab: hello (cold starts, scale to zero), then split (two
// revisions), then the swap, then teardown.

const ns = "default"

var helloImage = images.AppImage("helloworld")

// ksvcYAML renders a helloworld ksvc; extra is inserted under spec (e.g. a traffic block).
func ksvcYAML(name, revision, target string, annotations map[string]string, extra string) string {
	var ann strings.Builder
	for k, v := range annotations {
		fmt.Fprintf(&ann, "        %s: %q\n", k, v)
	}
	rev := ""
	if revision != "" {
		rev = "      name: " + revision + "\n"
	}
	return fmt.Sprintf(`apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: %s
  namespace: %s
spec:
  template:
    metadata:
%s      annotations:
%s    spec:
      containers:
      - image: %s
        env:
        - {name: TARGET, value: %q}
        readinessProbe:
          periodSeconds: 1
%s`, name, ns, rev, ann.String(), helloImage, target, extra)
}

func apply(t *testing.T, yaml string) {
	t.Helper()
	objs, err := kube.Decode([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := lab.client.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
}

func httpClient() *ksvc.Client { return ksvc.NewClient(lab.stack.IngressAddr(), 30*time.Second) }

// TestLabUp checks what the rest of the suite takes for granted once the lab is up: the node is Ready and
// every Deployment of the control plane's add-ons and of Knative Serving has all its replicas available.
func TestLabUp(t *testing.T) {
	needLab(t)
	t.Logf("lab up took %s", lab.upTime.Round(10*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, err := lab.client.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 1 {
		t.Errorf("%d nodes, want the lab's one", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		if !ready {
			t.Errorf("node %s not Ready: %v", n.Name, n.Status.Conditions)
		}
	}
	// Tests before this one may have just rolled a Deployment (a swap put back): give it a minute.
	last, err := poll(time.Minute, time.Second, func(ctx context.Context) (bool, string) {
		var short []string
		for _, space := range []string{"kube-system", "knative-serving"} {
			ds, err := lab.client.Kube.AppsV1().Deployments(space).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			if len(ds.Items) == 0 {
				short = append(short, "no Deployment in "+space)
			}
			for _, d := range ds.Items {
				if want := deref32(d.Spec.Replicas); d.Status.AvailableReplicas < want {
					short = append(short, fmt.Sprintf("%s/%s: %d of %d replicas available", space, d.Name, d.Status.AvailableReplicas, want))
				}
			}
		}
		return len(short) == 0, strings.Join(short, "; ")
	})
	if err != nil {
		t.Errorf("Deployments not available: %s", last)
	}
}

func TestKsvcReady(t *testing.T) {
	needLab(t, ns)
	apply(t, ksvcYAML("hello", "", "e2e", map[string]string{
		"autoscaling.knative.dev/initial-scale": "0",
		"autoscaling.knative.dev/window":        "6s",
	}, ""))
	t0 := time.Now()
	rev, err := ksvc.WaitReady(context.Background(), lab.client, ns, "hello", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ksvc hello Ready with revision %s in %s", rev, time.Since(t0).Round(time.Millisecond))
}

func TestColdStartThroughIngress(t *testing.T) {
	needLab(t, ns)
	ctx := context.Background()
	if err := ksvc.WaitNoPods(ctx, lab.client, ns, "hello", 500*time.Millisecond, 2*time.Minute, nil); err != nil {
		t.Fatalf("revision not at zero before the cold request: %v", err)
	}
	waitRoutable(t, "hello")
	resp, err := httpClient().Get(ctx, ksvc.Host("hello", ns, stack.Domain), "/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || !strings.Contains(resp.Body, "Hello e2e!") {
		t.Fatalf("cold request: %d %q", resp.Status, resp.Body)
	}
	t.Logf("cold request through the ingress: %d in %s", resp.Status, resp.Duration.Round(time.Millisecond))
	total, _, err := ksvc.PodCounts(ctx, lab.client, ns, "hello")
	if err != nil || total == 0 {
		t.Fatalf("no pod after the cold request: %d, %v", total, err)
	}
	coldStarted = true
}

// coldStarted records that hello has a pod to scale down.
var coldStarted bool

// waitRoutable waits for kube-proxy to program the ksvc's revision Services (the lab's ingress
// reports Ready without probing; see ksvc.WaitRoutable), without sending a request.
func waitRoutable(t *testing.T, name string) {
	t.Helper()
	t0 := time.Now()
	if err := ksvc.WaitRoutable(context.Background(), lab.client, ns, name, host.ServiceProgrammed, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s routable %s after the wait started", name, time.Since(t0).Round(time.Millisecond))
}

func TestScaleToZero(t *testing.T) {
	needLab(t, ns)
	if !coldStarted {
		t.Fatal("the cold start test did not leave a pod to scale down")
	}
	ctx := context.Background()
	t0 := time.Now()
	// Scale-down: no pod left that is not terminating (the queue-proxy drains ~30 s after that).
	err := kube.Poll(ctx, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		total, ready, err := ksvc.PodCounts(ctx, lab.client, ns, "hello")
		if err != nil {
			return false, nil
		}
		_ = total
		return ready == 0 && activePods(ctx, t, "hello") == 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(t0) > 2*time.Minute {
		t.Fatalf("scale to zero took %s", time.Since(t0))
	}
	t.Logf("revision scaled to zero %s after the cold request's test ended", time.Since(t0).Round(time.Second))
	if time.Since(t0) < 5*time.Second {
		t.Errorf("scaled to zero in %s, before the 6 s window could pass", time.Since(t0))
	}
}

func activePods(ctx context.Context, t *testing.T, service string) int {
	pods, err := lab.client.Kube.CoreV1().Pods(ns).List(ctx, listOpts(service))
	if err != nil {
		return -1
	}
	n := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			n++
		}
	}
	return n
}

func TestTrafficSplit(t *testing.T) {
	needLab(t, ns)
	ctx := context.Background()
	ann := map[string]string{"autoscaling.knative.dev/min-scale": "1"}
	apply(t, ksvcYAML("split", "split-v1", "v1", ann, ""))
	if _, err := ksvc.WaitReady(ctx, lab.client, ns, "split", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	traffic := `  traffic:
  - {revisionName: split-v1, percent: 50}
  - {revisionName: split-v2, percent: 50}
`
	apply(t, ksvcYAML("split", "split-v2", "v2", ann, traffic))
	rev, err := ksvc.WaitReady(ctx, lab.client, ns, "split", 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if rev != "split-v2" {
		t.Fatalf("latest ready revision %q", rev)
	}
	waitRoutable(t, "split")
	c := httpClient()
	host := ksvc.Host("split", ns, stack.Domain)
	counts := map[string]int{}
	const n = 200
	for i := 0; i < n; i++ {
		resp, err := c.Get(ctx, host, "/")
		if err != nil || resp.Status != 200 {
			t.Fatalf("request %d: %v %d %q", i, err, resp.Status, resp.Body)
		}
		counts[strings.TrimSpace(resp.Body)]++
	}
	t.Logf("split 50/50 over %d requests: %v", n, counts)
	// 3.4 standard deviations of a fair binomial(200): flaky once in ~1500 runs.
	for _, body := range []string{"Hello v1!", "Hello v2!"} {
		if got := counts[body]; got < 76 || got > 124 {
			t.Errorf("%q answered %d of %d, want 100 ± 24", body, got, n)
		}
	}
	if len(counts) != 2 {
		t.Errorf("unexpected answers: %v", counts)
	}
}

// load sends requests back to back until stop is closed and counts failures.
func load(ctx context.Context, host string, stop <-chan struct{}) (ok, failed *atomic.Int64, errs *sync.Map, done func()) {
	ok, failed, errs = &atomic.Int64{}, &atomic.Int64{}, &sync.Map{}
	var wg sync.WaitGroup
	c := httpClient()
	for w := 0; w < 2; w++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(ctx, host, "/")
				if err == nil && resp.Status == 200 {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				msg := fmt.Sprint(err)
				if err == nil {
					msg = fmt.Sprintf("%d %.100s", resp.Status, resp.Body)
				}
				errs.Store(msg, true)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	return ok, failed, errs, wg.Wait
}

func TestSwapAndUnswapKeepServing(t *testing.T) {
	needLab(t, ns)
	ctx := context.Background()
	p := lab.stack.Paths
	sock := lab.stack.Lab.Cfg.ContainerdSock()
	// Until Thaw's components work, prove the mechanics with upstream's images under other names.
	retag := swap.Images{}
	for _, c := range swap.Components {
		dst := "ko.local/thaw/" + c + ":upstream-retag"
		if err := images.Tag(ctx, p.Ctr, sock, images.KnativeImage(c), dst); err != nil {
			t.Fatal(err)
		}
		retag[c] = dst
	}
	stop := make(chan struct{})
	ok, failed, errs, wait := load(ctx, ksvc.Host("split", ns, stack.Domain), stop)
	t0 := time.Now()
	err := lab.stack.Swap(ctx, retag)
	swapDur := time.Since(t0)
	var got swap.Images
	if err == nil {
		got, err = swap.Current(ctx, lab.client.Kube)
	}
	// A cold start through the swapped-in components (hello is at zero after TestScaleToZero).
	if err == nil {
		err = coldRequest(ctx, t, "after swap")
	}
	t1 := time.Now()
	var err2 error
	if err == nil {
		err2 = lab.stack.Swap(ctx, stack.UpstreamImages())
	}
	unswapDur := time.Since(t1)
	close(stop)
	wait()
	if err != nil {
		t.Fatalf("swap: %v", err)
	}
	if err2 != nil {
		t.Fatalf("unswap: %v", err2)
	}
	if got["activator"] != retag["activator"] || got["autoscaler"] != retag["autoscaler"] {
		t.Fatalf("after swap: %v", got)
	}
	t.Logf("swap %s, unswap %s; %d requests ok, %d failed during both", swapDur.Round(time.Millisecond),
		unswapDur.Round(time.Millisecond), ok.Load(), failed.Load())
	if failed.Load() > 0 {
		var msgs []string
		errs.Range(func(k, _ any) bool { msgs = append(msgs, k.(string)); return true })
		t.Errorf("%d requests failed during swap/unswap: %v", failed.Load(), msgs)
	}
	if ok.Load() == 0 {
		t.Error("no request succeeded during the swap")
	}
	// The swap changed only the two images: the controller and webhook still run upstream's.
	for _, d := range []string{"controller", "webhook"} {
		dep, err := lab.client.Kube.AppsV1().Deployments("knative-serving").Get(ctx, d, getOpts())
		if err != nil {
			t.Fatal(err)
		}
		if img := dep.Spec.Template.Spec.Containers[0].Image; img != images.KnativeImage(d) {
			t.Errorf("%s image changed to %s", d, img)
		}
	}
	// And again through the upstream components restored by unswap.
	if err := ksvc.WaitNoPods(ctx, lab.client, ns, "hello", time.Second, 2*time.Minute, nil); err != nil {
		t.Fatalf("hello did not scale to zero after the swap: %v", err)
	}
	if err := coldRequest(ctx, t, "after unswap"); err != nil {
		t.Fatal(err)
	}
}

func coldRequest(ctx context.Context, t *testing.T, when string) error {
	resp, err := httpClient().Get(ctx, ksvc.Host("hello", ns, stack.Domain), "/")
	if err != nil {
		return fmt.Errorf("cold request %s: %w", when, err)
	}
	if resp.Status != 200 {
		return fmt.Errorf("cold request %s: %d %q", when, resp.Status, resp.Body)
	}
	t.Logf("cold request %s: %d in %s", when, resp.Status, resp.Duration.Round(time.Millisecond))
	return nil
}

// TestZZDownRestoresHost runs last: teardown and host comparison.
func TestZZDownRestoresHost(t *testing.T) {
	if lab.stack == nil {
		t.Skip("no lab")
	}
	t.Run("SwapCLI", testSwapCLI) // swap_cli_test.go, on the lab before it goes down
	ctx := context.Background()
	t0 := time.Now()
	err := lab.stack.Down(ctx)
	lab.down = true
	t.Logf("lab down in %s", time.Since(t0).Round(10*time.Millisecond))
	if err != nil {
		t.Errorf("down: %v", err)
	}
	after := host.Take(ctx)
	var ours, others []string
	for _, d := range host.Diff(lab.before, after) {
		if labTrace(d) {
			ours = append(ours, d)
		} else {
			others = append(others, d)
		}
	}
	if len(others) > 0 {
		// Other processes on the machine (other tests' namespaces and bridges) may change the host
		// meanwhile; such changes are shown, not held against the lab.
		t.Logf("host changes not attributable to the lab:\n  %s", strings.Join(others, "\n  "))
	}
	if len(ours) > 0 {
		t.Errorf("host differs after down:\n  %s", strings.Join(ours, "\n  "))
	}
}

// labTrace tells whether a snapshot difference is something the lab could have caused: every
// sysctl, directory and iptables difference, and links, routes, namespaces and mounts with the lab's
// names and addresses.
func labTrace(d string) bool {
	for _, p := range []string{"sysctl ", "dir ", "iptables chain "} {
		if strings.HasPrefix(d, p) {
			return true
		}
	}
	for _, s := range []string{"thaw", "veth", "cni-", "10.88.", "10.96.", "kubelet", "containerd", "/var/log/pods"} {
		if strings.Contains(d, s) {
			return true
		}
	}
	return false
}
