//go:build e2e

package lab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

const ns = "default"

var autoscaleImage = images.AppImage("autoscale")

// ksvcYAML renders an autoscale-app ksvc with the given revision annotations and containerConcurrency
// (0 leaves it unset).
func ksvcYAML(name string, ann map[string]string, cc int) string {
	return ksvc.Manifest{Name: name, Namespace: ns, Image: autoscaleImage, Annotations: ann, ContainerConcurrency: cc}.YAML()
}

// setupKsvc creates the ksvc, waits for it to be Ready and routable, and deletes it when t ends.
// It returns the ready revision.
func setupKsvc(t *testing.T, name string, ann map[string]string, cc int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	objs, err := kube.Decode([]byte(ksvcYAML(name, ann, cc)))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.client.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ksvc.Delete(ctx, env.client, ns, name); err != nil {
			t.Logf("delete ksvc %s: %v", name, err)
		}
	})
	rev, err := ksvc.WaitReady(ctx, env.client, ns, name, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := ksvc.WaitRoutable(ctx, env.client, ns, name, host.ServiceProgrammed, time.Minute); err != nil {
		t.Fatal(err)
	}
	return rev
}

// podReady reports whether a pod is Ready and not going away.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyPod waits for a Ready pod matching selector in namespace (and, when image is set, running
// that image) and returns it.
func readyPod(ctx context.Context, namespace, selector, image string, timeout time.Duration) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var found *corev1.Pod
	err := kube.Poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		pods, err := env.client.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if podReady(p) && (image == "" || p.Spec.Containers[0].Image == image) {
				found = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("no ready pod %q in %s: %w", selector, namespace, err)
	}
	return found, nil
}

// readyPodCount counts the Ready pods of a ksvc.
func readyPodCount(ctx context.Context, service string) int {
	pods, err := env.client.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service=" + service})
	if err != nil {
		return -1
	}
	n := 0
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			n++
		}
	}
	return n
}

// swapTo runs im's activator and autoscaler, waits until that autoscaler holds the lease and the
// previous activator pod is gone (its drain would share the CPU with the measurement), and returns
// the new activator pod.
func swapTo(ctx context.Context, t *testing.T, im swap.Images) *corev1.Pod {
	t.Helper()
	t0 := time.Now()
	if err := env.stack.Swap(ctx, im); err != nil {
		t.Fatal(err)
	}
	rolled := time.Since(t0)
	if err := waitAutoscalerLeads(ctx, im["autoscaler"]); err != nil {
		t.Fatal(err)
	}
	leads := time.Since(t0)
	act, err := readyPod(ctx, "knative-serving", "app=activator", im["activator"], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err = kube.Poll(wctx, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		pods, err := env.client.Kube.CoreV1().Pods("knative-serving").List(ctx, metav1.ListOptions{LabelSelector: "app=activator"})
		return err == nil && len(pods.Items) == 1, nil
	})
	if err != nil {
		t.Logf("the previous activator pod is still there after 60 s; measuring anyway")
	}
	t.Logf("swapped to %v: rolled out at %s, its autoscaler leads at %s, the old activator gone at %s; activator pod %s at %s",
		im, rolled.Round(time.Millisecond), leads.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), act.Name, act.Status.PodIP)
	return act
}

// waitAutoscalerLeads waits until the autoscaler Lease's holder is a live pod running image (a new
// autoscaler leads only once the old one's Lease is released or expires).
func waitAutoscalerLeads(ctx context.Context, image string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	last := ""
	err := kube.Poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		l, err := env.client.Kube.CoordinationV1().Leases("knative-serving").Get(ctx, "autoscaler-bucket-00-of-01", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			last = fmt.Sprint("lease: ", err)
			return false, nil
		}
		holder := *l.Spec.HolderIdentity
		pods, err := env.client.Kube.CoreV1().Pods("knative-serving").List(ctx, metav1.ListOptions{LabelSelector: "app=autoscaler"})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Spec.Containers[0].Image == image && strings.HasPrefix(holder, p.Name+"_") {
				return true, nil
			}
		}
		last = "lease held by " + holder
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("the %s autoscaler never took the lease: %s", image, last)
	}
	return nil
}

// waitOK sends req-like GETs (url, headers) until one answers 200: the activator learns a revision's
// pods from its informers and probes, a moment after the swap.
func waitOK(ctx context.Context, url string, hdr http.Header, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	defer cl.CloseIdleConnections()
	last := ""
	err := kube.Poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if h := hdr.Get("Host"); h != "" {
			req.Host = h
		}
		resp, err := cl.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s never answered 200: %w (last: %s)", url, err, last)
	}
	return nil
}

// containerPID finds the host PID of a pod's container: lab pods are host processes, and each one's
// cgroup path ends in its container ID.
func containerPID(p *corev1.Pod, container string) (int, error) {
	id := ""
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == container {
			_, id, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	if id == "" {
		return 0, fmt.Errorf("pod %s has no container %q with an ID yet", p.Name, container)
	}
	dirs, err := filepath.Glob("/proc/[0-9]*/cgroup")
	if err != nil {
		return 0, err
	}
	best := 0
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), id) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err == nil && (best == 0 || pid < best) {
			best = pid
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no process in the cgroup of container %s", id)
	}
	return best, nil
}

// vmRSS reads a process's resident set size in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS of %d: %q", pid, line)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// restarts is the restart count of a pod's container, read fresh.
func restarts(ctx context.Context, name, container string) int32 {
	p, err := env.client.Kube.CoreV1().Pods("knative-serving").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return -1
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == container {
			return cs.RestartCount
		}
	}
	return -1
}

// cpuStat is a container's CPU accounting from its cgroup (v1: the cpu and cpuacct hierarchies).
type cpuStat struct {
	usage              time.Duration // cpuacct.usage
	periods, throttled int64         // cpu.stat nr_periods, nr_throttled
	throttledTime      time.Duration // cpu.stat throttled_time
	ok                 bool
}

// readCPU reads the CPU accounting of pid's cgroup; ok is false where the host does not expose it.
func readCPU(pid int) cpuStat {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return cpuStat{}
	}
	var cpuPath, acctPath string
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			switch c {
			case "cpu":
				cpuPath = filepath.Join("/sys/fs/cgroup", parts[1], parts[2])
			case "cpuacct":
				acctPath = filepath.Join("/sys/fs/cgroup", parts[1], parts[2])
			}
		}
	}
	var s cpuStat
	if v, err := os.ReadFile(filepath.Join(acctPath, "cpuacct.usage")); err == nil && acctPath != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		if err != nil {
			return cpuStat{}
		}
		s.usage, s.ok = time.Duration(n), true
	}
	if v, err := os.ReadFile(filepath.Join(cpuPath, "cpu.stat")); err == nil && cpuPath != "" {
		for _, line := range strings.Split(string(v), "\n") {
			k, val, _ := strings.Cut(line, " ")
			n, _ := strconv.ParseInt(val, 10, 64)
			switch k {
			case "nr_periods":
				s.periods = n
			case "nr_throttled":
				s.throttled = n
			case "throttled_time":
				s.throttledTime = time.Duration(n)
			}
		}
	}
	return s
}

// sub is the accounting between two readings.
func (s cpuStat) sub(before cpuStat) cpuStat {
	return cpuStat{usage: s.usage - before.usage, periods: s.periods - before.periods, throttled: s.throttled - before.throttled,
		throttledTime: s.throttledTime - before.throttledTime, ok: s.ok && before.ok}
}
