package kpa

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
)

// Pod builders for the kubelet's and the scheduler's states.
type podOpt func(*corev1.Pod)

func stuckPod(name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: name, Labels: map[string]string{revisionLabel: key.Name}},
		Status: corev1.PodStatus{Phase: corev1.PodPending,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func waiting(container, reason, msg string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: container,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}})
	}
}

func running(container string, ready bool, restarts int32, lastExit *int32) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		s := corev1.ContainerStatus{Name: container, Ready: ready, RestartCount: restarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
		if lastExit != nil {
			s.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: *lastExit, Reason: "Error"}
		}
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, s)
	}
}

func terminated(container string, code int32, msg string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: container,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error", Message: msg}}})
	}
}

func unschedulable(p *corev1.Pod) {
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled,
		Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 Insufficient cpu."})
}

func podReadyOpt(p *corev1.Pod) {
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}

func deleting(p *corev1.Pod) {
	now := metav1.NewTime(t0)
	p.DeletionTimestamp = &now
}

func exit(c int32) *int32 { return &c }

func TestCannotStart(t *testing.T) {
	pull := `Back-off pulling image "ko.local/nope:v1"`
	for _, tc := range []struct {
		name       string
		pods       []*corev1.Pod
		wantReason string
		wantMsg    string // substring
		notMsg     string // must not be in the message
	}{
		{name: "no pods"},
		{name: "creating", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "ContainerCreating", ""))}},
		{name: "image pull back-off", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "ImagePullBackOff", pull))},
			wantReason: "ImagePullBackOff", wantMsg: "container user-container: " + pull},
		{name: "first pull error", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "ErrImagePull", "dial tcp: lookup ko.local"))},
			wantReason: "ErrImagePull", wantMsg: "lookup ko.local"},
		{name: "crash loop", pods: []*corev1.Pod{stuckPod("a", running("queue-proxy", false, 0, nil),
			waiting("user-container", "CrashLoopBackOff", "back-off 10s restarting failed container"))},
			wantReason: "CrashLoopBackOff", wantMsg: "back-off 10s"},
		{name: "just crashed", pods: []*corev1.Pod{stuckPod("a", terminated("user-container", 2,
			"GOMEMLIMIT=bogus\nfatal error: malformed GOMEMLIMIT\n\nruntime stack:\nruntime.throw(...)\n"))},
			wantReason: "CrashLoopBackOff", wantMsg: "exited with code 2 (Error): GOMEMLIMIT=bogus ; fatal error: malformed GOMEMLIMIT",
			notMsg: "runtime stack"},
		{name: "restarted after a crash, not ready yet", pods: []*corev1.Pod{stuckPod("a", running("user-container", false, 1, exit(1)))},
			wantReason: "CrashLoopBackOff", wantMsg: "exited with code 1"},
		{name: "restarted after a crash, ready", pods: []*corev1.Pod{stuckPod("a", running("user-container", true, 1, exit(1)))}},
		{name: "missing config key", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "CreateContainerConfigError", `configmap "x" not found`))},
			wantReason: "CreateContainerConfigError", wantMsg: "not found"},
		{name: "unschedulable", pods: []*corev1.Pod{stuckPod("a", unschedulable)},
			wantReason: "Unschedulable", wantMsg: "Insufficient cpu"},
		{name: "one ready pod", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "ImagePullBackOff", pull)), stuckPod("b", podReadyOpt)}},
		{name: "one pod still starting", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "ImagePullBackOff", pull)),
			stuckPod("b", waiting("user-container", "ContainerCreating", ""))}},
		{name: "terminating pods do not count", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "ImagePullBackOff", pull)),
			stuckPod("b", podReadyOpt, deleting)}, wantReason: "ImagePullBackOff"},
		{name: "first stuck pod by name", pods: []*corev1.Pod{stuckPod("b", unschedulable), stuckPod("a", waiting("user-container", "ErrImagePull", "x"))},
			wantReason: "ErrImagePull"},
		{name: "long message clipped", pods: []*corev1.Pod{stuckPod("a", waiting("user-container", "ErrImagePull", strings.Repeat("x", 4096)))},
			wantReason: "ErrImagePull", wantMsg: "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, m := cannotStart(tc.pods)
			if r != tc.wantReason || !strings.Contains(m, tc.wantMsg) || (tc.notMsg != "" && strings.Contains(m, tc.notMsg)) {
				t.Fatalf("cannotStart = %q %q, want %q containing %q", r, m, tc.wantReason, tc.wantMsg)
			}
			if len(m) > maxCannotStartMessageSize+len("…") {
				t.Fatalf("message of %d bytes", len(m))
			}
		})
	}
}

// A PA activating from zero whose pod cannot pull its image says so in its Active condition (still
// Unknown: activating), the kubelet's retries change the reason without restarting the activation
// timeout, the pod's recovery brings Queued back, and the timeout still scales the revision to zero.
func TestActivatingReportsWhyPodsCannotStart(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionFalse, reasonNoTraffic, time.Hour), withDesired(0))
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
	h.addMetric(pa)
	h.scales.replicas = ptr32(0)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 1, ExcessBurstCapacity: -111})
	pods := h.podInf.Core().V1().Pods().Informer().GetIndexer()
	setPod := func(p *corev1.Pod) {
		t.Helper()
		if err := pods.Update(p); err != nil {
			t.Fatal(err)
		}
	}
	step := func(d time.Duration, wantReason string) *autoscalingv1alpha1.PodAutoscaler {
		t.Helper()
		h.clock.Step(d)
		if err := h.reconcile(); err != nil {
			t.Fatal(err)
		}
		st := h.status()
		if st == nil {
			t.Fatalf("no status written, want Active reason %s", wantReason)
		}
		c := st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive)
		ready := st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionReady)
		if c.Reason != wantReason || ready.Reason != wantReason {
			t.Fatalf("Active %s/%s, Ready %s/%s, want reason %s on both", c.Status, c.Reason, ready.Status, ready.Reason, wantReason)
		}
		if err := h.sf.Autoscaling().V1alpha1().PodAutoscalers().Informer().GetIndexer().Update(st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	st := step(0, reasonQueued)
	started := st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive).LastTransitionTime
	h.scales.replicas = ptr32(1)
	setPod(stuckPod("p", waiting("user-container", "ErrImagePull", "lookup ko.local: no such host")))
	st = step(time.Second, "ErrImagePull")
	if c := st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive); c.Status != corev1.ConditionUnknown ||
		!strings.Contains(c.Message, "no such host") {
		t.Fatalf("Active = %+v, want Unknown with the kubelet's message", c)
	}
	setPod(stuckPod("p", waiting("user-container", "ImagePullBackOff", `Back-off pulling image "ko.local/nope:v1"`)))
	st = step(time.Second, "ImagePullBackOff")
	if got := st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive).LastTransitionTime; !got.Inner.Equal(&started.Inner) {
		t.Fatalf("activation restarted at %v by a new reason, want %v", got.Inner, started.Inner)
	}
	// The image arrives: the container starts, and the requests wait for it again.
	setPod(stuckPod("p", running("user-container", false, 0, nil)))
	step(time.Second, reasonQueued)
	// Stuck again; once the requests stop (the decider wants 0), the activation timeout, counted from
	// the start of the activation, takes the revision to zero as upstream's would.
	setPod(stuckPod("p", waiting("user-container", "ImagePullBackOff", "back-off")))
	step(time.Second, "ImagePullBackOff")
	h.deciders.set(key, multiscaler.Status{DesiredScale: 0, ExcessBurstCapacity: -111})
	s := Resolve(h.cfg, h.dcfg, pa)
	h.clock.Step(s.ActivationTimeout - 3*time.Second)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if c := h.status().Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive); c.Status != corev1.ConditionFalse || c.Reason != reasonTimedOut {
		t.Fatalf("after the activation timeout Active = %s/%s, want False/%s", c.Status, c.Reason, reasonTimedOut)
	}
	if last := h.scales.patches[len(h.scales.patches)-1]; last != 0 {
		t.Fatalf("patches %v, want the last to 0", h.scales.patches)
	}
}
