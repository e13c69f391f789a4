package kube

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Summary lists nodes and the pods of namespaces with their phase, readiness and restarts.
func Summary(ctx context.Context, c *Client, namespaces ...string) string {
	var b strings.Builder
	if nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			ready := "NotReady"
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready = "Ready"
				}
			}
			fmt.Fprintf(&b, "node %s %s %s\n", n.Name, ready, n.Status.NodeInfo.KubeletVersion)
		}
	}
	for _, ns := range namespaces {
		pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			fmt.Fprintf(&b, "pods in %s: %v\n", ns, err)
			continue
		}
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "  %-16s %-48s %s\n", ns, p.Name, PodState(&p))
		}
	}
	return b.String()
}

// PodState is a one-line state of a pod: phase, ready containers, restarts and the first waiting reason.
func PodState(p *corev1.Pod) string {
	ready, restarts, reason := 0, int32(0), ""
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Ready {
			ready++
		}
		restarts += cs.RestartCount
		if cs.State.Waiting != nil && reason == "" {
			reason = cs.State.Waiting.Reason
		}
	}
	s := fmt.Sprintf("%s %d/%d ready, %d restarts", p.Status.Phase, ready, len(p.Spec.Containers), restarts)
	if p.DeletionTimestamp != nil {
		s += ", terminating"
	}
	if reason != "" {
		s += ", " + reason
	}
	return s
}

// Events returns the last n events of ns, oldest first.
func Events(ctx context.Context, c *Client, ns string, n int) string {
	evs, err := c.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	items := evs.Items
	sort.Slice(items, func(i, j int) bool { return items[i].LastTimestamp.Before(&items[j].LastTimestamp) })
	if len(items) > n {
		items = items[len(items)-n:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- events in %s ---\n", ns)
	for _, e := range items {
		fmt.Fprintf(&b, "  %s %s/%s %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, strings.TrimSpace(e.Message))
	}
	return b.String()
}

// Logs returns the last lines of every container of every pod in ns.
func Logs(ctx context.Context, c *Client, ns string, lines int64) string {
	pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range pods.Items {
		for _, ctr := range p.Spec.Containers {
			rc, err := c.Kube.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: ctr.Name, TailLines: &lines}).Stream(ctx)
			if err != nil {
				fmt.Fprintf(&b, "--- logs %s/%s[%s]: %v\n", ns, p.Name, ctr.Name, err)
				continue
			}
			data, _ := io.ReadAll(io.LimitReader(rc, 64<<10))
			rc.Close()
			fmt.Fprintf(&b, "--- logs %s/%s[%s] ---\n%s\n", ns, p.Name, ctr.Name, strings.TrimRight(string(data), "\n"))
		}
	}
	return b.String()
}
