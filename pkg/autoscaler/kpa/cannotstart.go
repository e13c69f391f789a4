package kpa

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Pod-level reasons a revision's pods cannot start, as the kubelet and the scheduler name them. While a
// PA is activating and every live pod of its revision is stuck on one of them, the PA's Active condition
// (Unknown, still activating) carries that reason and a message instead of Queued. Upstream's revision
// reconciler copies the PA's Ready condition into the Revision's Active condition, the only pod-level
// signal the activator may read under upstream's RBAC (its ClusterRole covers revisions, services and
// endpoints, not pods or PodAutoscalers): Thaw's activator answers such a revision's requests with 503
// at once instead of holding them for their timeout. Upstream's revision reconciler reports waiting
// reasons itself only after the Deployment's progress deadline (600 s by default), and crashes only
// when something else makes it reconcile.
const (
	reasonImagePullBackOff    = "ImagePullBackOff"
	reasonErrImagePull        = "ErrImagePull"
	reasonInvalidImageName    = "InvalidImageName"
	reasonErrImageNeverPull   = "ErrImageNeverPull"
	reasonCrashLoopBackOff    = "CrashLoopBackOff"
	reasonCreateConfigError   = "CreateContainerConfigError"
	reasonUnschedulable       = corev1.PodReasonUnschedulable
	maxCannotStartMessageSize = 512
)

// waitingFailures are the container waiting reasons that will not clear by themselves: a missing or
// unpullable image, a crash loop, a missing ConfigMap or Secret key. ContainerCreating and
// PodInitializing are progress, not failure.
var waitingFailures = map[string]bool{
	reasonImagePullBackOff:  true,
	reasonErrImagePull:      true,
	reasonInvalidImageName:  true,
	reasonErrImageNeverPull: true,
	reasonCrashLoopBackOff:  true,
	reasonCreateConfigError: true,
}

// cannotStart returns why the revision's pods cannot start: a reason and message when at least one
// pod is live (not terminating, not finished), none is ready, and every live one is stuck; else "".
// One pod still making progress means the revision may yet start, so its requests keep waiting. The
// first stuck pod by name gives the reason, so the status does not flap between pods.
func cannotStart(pods []*corev1.Pod) (reason, message string) {
	live := make([]*corev1.Pod, 0, len(pods))
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return "", ""
	}
	sort.Slice(live, func(i, j int) bool { return live[i].Name < live[j].Name })
	for _, p := range live {
		r, m := podCannotStart(p)
		if r == "" {
			return "", ""
		}
		if reason == "" {
			reason, message = r, m
		}
	}
	return reason, message
}

// podCannotStart returns why p cannot start, or "" when it is ready or still making progress.
func podCannotStart(p *corev1.Pod) (reason, message string) {
	for _, c := range p.Status.Conditions {
		switch {
		case c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue:
			return "", ""
		case c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == reasonUnschedulable:
			return reasonUnschedulable, clip(c.Message)
		}
	}
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, s := range statuses {
		if w := s.State.Waiting; w != nil && waitingFailures[w.Reason] {
			return w.Reason, clip("container " + s.Name + ": " + w.Message)
		}
		// Between the crashes of a loop the kubelet shows the container terminated, then running (not
		// ready) after a restart: still the same loop. Pods restart their containers always.
		if s.Ready {
			continue
		}
		if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
			return reasonCrashLoopBackOff, clip(exitMessage(s.Name, t))
		}
		if t := s.LastTerminationState.Terminated; t != nil && s.RestartCount > 0 && s.State.Running != nil {
			return reasonCrashLoopBackOff, clip(exitMessage(s.Name, t))
		}
	}
	return "", ""
}

func exitMessage(container string, t *corev1.ContainerStateTerminated) string {
	msg := fmt.Sprintf("container %s exited with code %d", container, t.ExitCode)
	if t.Reason != "" {
		msg += " (" + t.Reason + ")"
	}
	if m := firstParagraph(t.Message); m != "" {
		msg += ": " + m
	}
	return msg
}

// firstParagraph keeps a termination message (with FallbackToLogsOnError, as Knative sets it, the
// log's tail) up to its first blank line, on one line: the error, not the stack trace after it.
func firstParagraph(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i]
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ; ")), " ")
}

// clip bounds a message copied from a pod's status into the PA's (and then the Revision's) status and
// the 503's body: the kubelet's pull errors can be long.
func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxCannotStartMessageSize {
		return s[:maxCannotStartMessageSize] + "…"
	}
	return s
}
