package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// SystemNamespace is Knative Serving's: the only namespace whose pods the faults touch.
const SystemNamespace = "knative-serving"

// Containerd reaches the containers of a node that runs on this host (the lab), through containerd's
// ctr client in the CRI namespace.
type Containerd struct {
	Ctr, Address string
	// Exec runs a command (tests record them); nil runs it.
	Exec func(ctx context.Context, name string, args ...string) ([]byte, error)
}

func (c Containerd) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	full := append([]string{"--address", c.Address, "--namespace", "k8s.io"}, args...)
	if name == "" {
		name = c.Ctr
	} else {
		full = args
	}
	if c.Exec != nil {
		return c.Exec(ctx, name, full...)
	}
	cmd := exec.CommandContext(ctx, name, full...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// Kill sends SIGKILL to a container's main process (the container's task), as the kernel's OOM killer
// or a node failure would: no SIGTERM, no drain, the pod stays and the kubelet restarts the container.
func (c Containerd) Kill(ctx context.Context, containerID string) error {
	_, err := c.run(ctx, "", "tasks", "kill", "--signal", "SIGKILL", containerID)
	return err
}

// PID returns the host PID of a container's main process (to enter its network namespace).
func (c Containerd) PID(ctx context.Context, containerID string) (int, error) {
	out, err := c.run(ctx, "", "tasks", "ls")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == containerID {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("container %s has no task in containerd", containerID)
}

// Pods picks the targets of a fault among one component's pods in SystemNamespace.
type Pods struct {
	Kube kubernetes.Interface
	// Component is the Deployment's app label and container name ("activator", "autoscaler").
	Component string
	Rand      *rand.Rand
}

// Ready lists the component's Ready, not terminating pods.
func (p Pods) Ready(ctx context.Context) ([]corev1.Pod, error) {
	list, err := p.Kube.CoreV1().Pods(SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + p.Component})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, pod := range list.Items {
		if pod.DeletionTimestamp == nil && kube.PodReady(&pod) && containerID(&pod, p.Component) != "" {
			out = append(out, pod)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no Ready %s pod", p.Component)
	}
	return out, nil
}

// Random picks one Ready pod.
func (p Pods) Random(ctx context.Context) (*corev1.Pod, error) {
	pods, err := p.Ready(ctx)
	if err != nil {
		return nil, err
	}
	return &pods[p.Rand.IntN(len(pods))], nil
}

// containerID is the containerd ID of the pod's container name ("" when it has none running).
func containerID(p *corev1.Pod, name string) string {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == name && s.State.Running != nil {
			_, id, _ := strings.Cut(s.ContainerID, "://")
			return id
		}
	}
	return ""
}

// BucketHolders returns the pods holding autoscaler bucket Leases (autoscaler-bucket-XX-of-YY; the
// holder identity is "<pod>_<ip>") with their buckets, in a random order weighted by the buckets
// each holds, as a random key's owner would be picked.
func BucketHolders(ctx context.Context, kc kubernetes.Interface, rnd *rand.Rand) (pods []string, buckets map[string][]string, err error) {
	leases, err := kc.CoordinationV1().Leases(SystemNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	buckets = map[string][]string{}
	var draws []string // one entry per held bucket
	for _, l := range leases.Items {
		if !strings.HasPrefix(l.Name, "autoscaler-bucket-") {
			continue
		}
		h, _, _ := strings.Cut(ptr.Deref(l.Spec.HolderIdentity, ""), "_")
		if h == "" {
			continue
		}
		buckets[h] = append(buckets[h], l.Name)
		draws = append(draws, h)
	}
	if len(draws) == 0 {
		return nil, nil, errors.New("no held autoscaler bucket lease")
	}
	rnd.Shuffle(len(draws), func(i, j int) { draws[i], draws[j] = draws[j], draws[i] })
	seen := map[string]bool{}
	for _, d := range draws {
		if !seen[d] {
			seen[d] = true
			pods = append(pods, d)
		}
	}
	return pods, buckets, nil
}

// Killer SIGKILLs a pod's container through the lab's containerd, or, without one (any other
// cluster), deletes the pod with no grace period: the closest a client can get without node access
// (the pod object and its IP go away too, which a real SIGKILL does not do).
type Killer struct {
	Kube       kubernetes.Interface
	Containerd *Containerd // nil: force delete
	// Component is the container to kill.
	Component string
	// Namespace of the pods (default SystemNamespace).
	Namespace string
}

func (k Killer) namespace() string {
	if k.Namespace == "" {
		return SystemNamespace
	}
	return k.Namespace
}

// Kill kills the named pod's component container.
func (k Killer) Kill(ctx context.Context, podName string) (string, error) {
	pod, err := k.Kube.CoreV1().Pods(k.namespace()).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return podName, err
	}
	if k.Containerd == nil {
		return podName + " (force delete)", k.Kube.CoreV1().Pods(k.namespace()).Delete(ctx, podName,
			metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}
	id := containerID(pod, k.Component)
	if id == "" {
		return podName, fmt.Errorf("pod %s has no running %s container", podName, k.Component)
	}
	return podName + " (SIGKILL)", k.Containerd.Kill(ctx, id)
}

// AutoscalerKill SIGKILLs the pod holding a random autoscaler bucket. A Lease still names a holder
// whose container is down (waiting out a crash back-off) until it expires: such a pod is skipped.
func AutoscalerKill(k Killer, rnd *rand.Rand) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		pods, buckets, err := BucketHolders(ctx, k.Kube, rnd)
		if err != nil {
			return "", nil, err
		}
		var errs []error
		for _, pod := range pods {
			target, err := k.Kill(ctx, pod)
			if err == nil {
				return fmt.Sprintf("%s holding %d buckets", target, len(buckets[pod])), nil, nil
			}
			errs = append(errs, err)
		}
		return "", nil, errors.Join(errs...)
	})
}

// ActivatorKill SIGKILLs a random Ready activator pod.
func ActivatorKill(k Killer, p Pods) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		pod, err := p.Random(ctx)
		if err != nil {
			return "", nil, err
		}
		target, err := k.Kill(ctx, pod.Name)
		return target, nil, err
	})
}

// PodDelete deletes a random Ready pod of the component gracefully (its own termination grace).
func PodDelete(p Pods) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		pod, err := p.Random(ctx)
		if err != nil {
			return "", nil, err
		}
		return pod.Name + " (delete)", nil, p.Kube.CoreV1().Pods(SystemNamespace).Delete(ctx, pod.Name, metav1.DeleteOptions{})
	})
}

// Cutoff blocks every Ready activator pod's TCP traffic to the autoscaler's port (its Service's
// ClusterIP and the autoscaler pods' IPs) with iptables DROP rules in the activator's network
// namespace, so the websocket stalls as behind a broken network rather than being refused. The undo
// deletes exactly the rules added, also those of a half-done injection.
func Cutoff(kc kubernetes.Interface, cd Containerd, activators Pods, port int) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		var dests []string
		if svc, err := kc.CoreV1().Services(SystemNamespace).Get(ctx, "autoscaler", metav1.GetOptions{}); err == nil && svc.Spec.ClusterIP != "" {
			dests = append(dests, svc.Spec.ClusterIP)
		}
		as, err := Pods{Kube: kc, Component: "autoscaler"}.Ready(ctx)
		if err != nil {
			return "", nil, err
		}
		for _, p := range as {
			if p.Status.PodIP != "" {
				dests = append(dests, p.Status.PodIP)
			}
		}
		pods, err := activators.Ready(ctx)
		if err != nil {
			return "", nil, err
		}
		type rule struct {
			pid  int
			args []string
		}
		var added []rule
		undo := func(ctx context.Context) error {
			var errs []error
			for _, r := range added {
				_, err := cd.nsIptables(ctx, r.pid, append([]string{"-D"}, r.args...)...)
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		}
		for _, p := range pods {
			pid, err := cd.PID(ctx, containerID(&p, activators.Component))
			if err != nil {
				return "", undo, err
			}
			for _, d := range dests {
				args := []string{"OUTPUT", "-p", "tcp", "-d", d, "--dport", strconv.Itoa(port), "-j", "DROP"}
				if _, err := cd.nsIptables(ctx, pid, append([]string{"-I"}, args...)...); err != nil {
					return "", undo, err
				}
				added = append(added, rule{pid, args})
			}
		}
		return fmt.Sprintf("%d activators → autoscaler :%d (%d addresses)", len(pods), port, len(dests)), undo, nil
	})
}

// nsIptables runs iptables in the network namespace of the process pid.
func (c Containerd) nsIptables(ctx context.Context, pid int, args ...string) ([]byte, error) {
	full := append([]string{"-t", strconv.Itoa(pid), "-n", "iptables", "-w"}, args...)
	return c.run(ctx, "nsenter", full...)
}
