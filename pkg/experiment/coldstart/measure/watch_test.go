package measure

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
)

func TestWatcherSeesScaleUpReadyAndZero(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	zero := int32(0)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "rev-deployment", Namespace: "ns"}, Spec: appsv1.DeploymentSpec{Replicas: &zero}}
	kc := fake.NewClientset(dep)
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	w := NewWatcher(kc, "ns", clk)
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, why := w.AtZero("rev", "rev-deployment"); !ok {
		t.Fatalf("at zero: %s", why)
	}
	send := clk.Now()
	clk.Step(7 * time.Millisecond)
	one := int32(1)
	d2 := dep.DeepCopy()
	d2.Spec.Replicas = &one
	if _, err := kc.AppsV1().Deployments("ns").Update(ctx, d2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the scale-up", func() bool { _, ok := w.ScaleUp("rev-deployment", send); return ok })
	if at, _ := w.ScaleUp("rev-deployment", send); !at.Equal(send.Add(7 * time.Millisecond)) {
		t.Errorf("scale-up at %v, want send+7ms", at)
	}
	if _, ok := w.ScaleUp("rev-deployment", send.Add(time.Second)); ok {
		t.Error("no scale-up after the one seen")
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "rev-pod", Namespace: "ns", Labels: map[string]string{RevisionLabel: "rev"}},
		Status: corev1.PodStatus{PodIP: "10.88.1.5"}}
	if _, err := kc.CoreV1().Pods("ns").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the pod", func() bool { return len(w.PodsSince("rev", send)) == 1 })
	clk.Step(500 * time.Millisecond)
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := kc.CoreV1().Pods("ns").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "Ready", func() bool { return !w.PodsSince("rev", send)[0].Ready.IsZero() })
	p := w.PodsSince("rev", send)[0]
	if p.IP != "10.88.1.5" || !p.Ready.Equal(send.Add(507*time.Millisecond)) || !p.FirstSeen.Equal(send.Add(7*time.Millisecond)) {
		t.Errorf("pod info %+v", p)
	}
	if ok, _ := w.AtZero("rev", "rev-deployment"); ok {
		t.Error("a revision with replicas 1 and a pod is not at zero")
	}
	if err := kc.CoreV1().Pods("ns").Delete(ctx, "rev-pod", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.AppsV1().Deployments("ns").Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "zero again", func() bool { ok, _ := w.AtZero("rev", "rev-deployment"); return ok })
	w.Forget("rev")
	if n := len(w.PodsSince("rev", time.Time{})); n != 0 {
		t.Errorf("forgotten deleted pods still listed: %d", n)
	}
}
