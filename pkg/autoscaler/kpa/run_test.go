package kpa

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
)

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	testutil.Eventually(t, what, f)
}

// Run wires the informers: a PA creates its SKS; the SKS getting its
// private service (an SKS event) brings the decider and the Metric; a pod
// event reconciles the PA again; another class is ignored.
func TestRunWiring(t *testing.T) {
	h := newHarness(t)
	h.scales.replicas = ptr32(1)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 1, ExcessBurstCapacity: 5})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.r.after = h.r.queue.AddAfter

	pa := newPA()
	if _, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(key.Namespace).Create(ctx, pa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hpa := newPA(withAnn(asconfig.ClassAnnotationKey, asconfig.HPA))
	hpa.Name = "other"
	if _, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(key.Namespace).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.sf.Start(ctx.Done())
	h.nf.Start(ctx.Done())
	h.podInf.Start(ctx.Done())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx, 2) }()

	eventually(t, "SKS creation", func() bool {
		_, err := h.net.NetworkingV1alpha1().ServerlessServices(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		return err == nil
	})
	sks, _ := h.net.NetworkingV1alpha1().ServerlessServices(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
	sks.Status.PrivateServiceName = key.Name + "-private"
	sks.Status.ServiceName = key.Name
	sks.Status.MarkEndpointsReady()
	if _, err := h.net.NetworkingV1alpha1().ServerlessServices(key.Namespace).UpdateStatus(ctx, sks, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Metric creation", func() bool {
		_, err := h.serving.AutoscalingV1alpha1().Metrics(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		return err == nil
	})
	if _, _, err := h.deciders.Get(key); err != nil {
		t.Fatalf("no decider: %v", err)
	}

	// A ready pod arrives: the PA turns Active with actualScale 1.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: "pod", Labels: map[string]string{revisionLabel: key.Name}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if _, err := h.pods.CoreV1().Pods(key.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PA Active", func() bool {
		got, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		return err == nil && got.Status.IsActive() && got.Status.GetActualScale() == 1
	})

	// The HPA-class PA got nothing.
	if _, err := h.net.NetworkingV1alpha1().ServerlessServices(key.Namespace).Get(ctx, "other", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("SKS for an HPA-class PA: %v", err)
	}

	// Pod gauges are exported under upstream's names.
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["kn_revision_pods_count"] != 1 || got["kn_revision_pods_requested"] != 1 {
		t.Errorf("gauges = %v", got)
	}

	// Deleting the PA removes its decider.
	if err := h.serving.AutoscalingV1alpha1().PodAutoscalers(key.Namespace).Delete(ctx, key.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "decider removal", func() bool {
		_, _, err := h.deciders.Get(key)
		return err != nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = types.NamespacedName{}
	_ = autoscalingv1alpha1.PodAutoscaler{}
}
