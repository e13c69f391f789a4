package upstream

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

var t0 = time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)

func deployment(name string, replicas int32, image string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SystemNamespace, Generation: 1},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: image}}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: replicas, UpdatedReplicas: replicas, AvailableReplicas: replicas},
	}
}

func pod(component string, i int, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-abc-%d", component, i), Namespace: SystemNamespace, Labels: map[string]string{"app": component}},
		Status: corev1.PodStatus{PodIP: fmt.Sprintf("10.0.0.%d", i),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func lease(name, holder string) *coordinationv1.Lease {
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SystemNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder)}}
}

func baseObjects() []runtime.Object {
	return []runtime.Object{
		deployment(Autoscaler, 1, "a:1"), deployment(Activator, 1, "b:1"),
		&autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: Activator, Namespace: SystemNamespace},
			Spec: autoscalingv2.HorizontalPodAutoscalerSpec{MinReplicas: ptr.To[int32](1), MaxReplicas: 20}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: LeaderElection, Namespace: SystemNamespace},
			Data: map[string]string{"_example": "doc"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DeploymentConfig, Namespace: SystemNamespace},
			Data: map[string]string{"queue-sidecar-image": "q:1"}},
	}
}

func TestApplyShapeAndRestore(t *testing.T) {
	ctx := context.Background()
	kc := fake.NewClientset(baseObjects()...)
	c := &Cluster{Kube: kc, Clock: clocktesting.NewFakePassiveClock(t0), Poll: time.Millisecond}
	saved, err := c.Save(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyShape(ctx, Shape{Replicas: 3, Buckets: 10}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetQueueCPURequest(ctx, "1m"); err != nil {
		t.Fatal(err)
	}
	dc, _ := kc.CoreV1().ConfigMaps(SystemNamespace).Get(ctx, DeploymentConfig, metav1.GetOptions{})
	if dc.Data["queue-sidecar-cpu-request"] != "1m" || dc.Data["queue-sidecar-image"] != "q:1" {
		t.Errorf("config-deployment = %v", dc.Data)
	}
	cm, _ := kc.CoreV1().ConfigMaps(SystemNamespace).Get(ctx, LeaderElection, metav1.GetOptions{})
	want := map[string]string{"_example": "doc", "buckets": "10", "lease-duration": "15s", "renew-deadline": "10s", "retry-period": "2s"}
	if fmt.Sprint(cm.Data) != fmt.Sprint(want) {
		t.Errorf("config-leader-election = %v, want %v", cm.Data, want)
	}
	for _, tt := range []struct {
		name    string
		restart bool
	}{{Autoscaler, true}, {Activator, false}} {
		d, _ := kc.AppsV1().Deployments(SystemNamespace).Get(ctx, tt.name, metav1.GetOptions{})
		if *d.Spec.Replicas != 3 {
			t.Errorf("%s replicas = %d, want 3", tt.name, *d.Spec.Replicas)
		}
		if got := d.Spec.Template.Annotations[RestartAnnotation]; (got != "") != tt.restart || (tt.restart && got != t0.Format(time.RFC3339Nano)) {
			t.Errorf("%s restart annotation = %q, want restart %v", tt.name, got, tt.restart)
		}
	}
	h, _ := kc.AutoscalingV2().HorizontalPodAutoscalers(SystemNamespace).Get(ctx, Activator, metav1.GetOptions{})
	if *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 3 {
		t.Errorf("activator HPA %d..%d, want 3..3", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}

	// Restore waits for the Deployments: the fake's status says 1 replica again once they are scaled.
	for _, d := range []string{Autoscaler, Activator} {
		if _, err := kc.CoreV1().Pods(SystemNamespace).Create(ctx, pod(d, 1, true), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Restore(ctx, saved, time.Second); err != nil {
		t.Fatal(err)
	}
	cm, _ = kc.CoreV1().ConfigMaps(SystemNamespace).Get(ctx, LeaderElection, metav1.GetOptions{})
	if fmt.Sprint(cm.Data) != fmt.Sprint(map[string]string{"_example": "doc"}) {
		t.Errorf("restored config-leader-election = %v", cm.Data)
	}
	dc, _ = kc.CoreV1().ConfigMaps(SystemNamespace).Get(ctx, DeploymentConfig, metav1.GetOptions{})
	if fmt.Sprint(dc.Data) != fmt.Sprint(map[string]string{"queue-sidecar-image": "q:1"}) {
		t.Errorf("restored config-deployment = %v", dc.Data)
	}
	h, _ = kc.AutoscalingV2().HorizontalPodAutoscalers(SystemNamespace).Get(ctx, Activator, metav1.GetOptions{})
	if *h.Spec.MinReplicas != 1 || h.Spec.MaxReplicas != 20 {
		t.Errorf("restored HPA %d..%d, want 1..20", *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
}

// Without an activator HPA (a lab that deleted it) the shape still applies.
func TestApplyShapeWithoutHPA(t *testing.T) {
	ctx := context.Background()
	objs := baseObjects()
	kc := fake.NewClientset(objs[0], objs[1], objs[3], objs[4])
	c := &Cluster{Kube: kc, Clock: clocktesting.NewFakePassiveClock(t0)}
	s, err := c.Save(ctx)
	if err != nil || s.HPAMin != nil {
		t.Fatalf("Save = %+v, %v", s, err)
	}
	if err := c.ApplyShape(ctx, Shape{Replicas: 2, Buckets: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestWaitShape(t *testing.T) {
	sh := Shape{Replicas: 2, Buckets: 2}
	ready := func() []runtime.Object {
		return []runtime.Object{
			deployment(Autoscaler, 2, "a:1"), deployment(Activator, 2, "b:1"),
			pod(Autoscaler, 1, true), pod(Autoscaler, 2, true), pod(Activator, 1, true), pod(Activator, 2, true),
		}
	}
	tests := []struct {
		name      string
		objs      []runtime.Object
		images    map[string]string
		wantErr   bool
		wantLease []string // leases left afterwards
	}{
		{
			name: "all held, a stale lease of another bucket count deleted",
			objs: append(ready(), lease(BucketLease(0, 2), "autoscaler-abc-1_10.0.0.1"), lease(BucketLease(1, 2), "autoscaler-abc-2_10.0.0.2"),
				lease(BucketLease(0, 1), "autoscaler-old-9_10.0.0.9"), lease("controller.knative.dev", "controller-x_1")),
			images:    map[string]string{Autoscaler: "a:1", Activator: "b:1"},
			wantLease: []string{BucketLease(0, 2), BucketLease(1, 2), "controller.knative.dev"},
		},
		{
			name:    "a bucket held by a pod that is gone",
			objs:    append(ready(), lease(BucketLease(0, 2), "autoscaler-abc-1_10.0.0.1"), lease(BucketLease(1, 2), "autoscaler-old-9_10.0.0.9")),
			wantErr: true,
		},
		{
			name:    "a bucket not held yet",
			objs:    append(ready(), lease(BucketLease(0, 2), "autoscaler-abc-1_10.0.0.1")),
			wantErr: true,
		},
		{
			name:   "wrong image",
			objs:   append(ready(), lease(BucketLease(0, 2), "autoscaler-abc-1_10.0.0.1"), lease(BucketLease(1, 2), "autoscaler-abc-2_10.0.0.2")),
			images: map[string]string{Autoscaler: "thaw:1"}, wantErr: true,
		},
		{
			name: "a pod not Ready",
			objs: append([]runtime.Object{deployment(Autoscaler, 2, "a:1"), deployment(Activator, 2, "b:1"),
				pod(Autoscaler, 1, true), pod(Autoscaler, 2, false), pod(Activator, 1, true), pod(Activator, 2, true)},
				lease(BucketLease(0, 2), "autoscaler-abc-1_10.0.0.1"), lease(BucketLease(1, 2), "autoscaler-abc-1_10.0.0.1")),
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			kc := fake.NewClientset(tt.objs...)
			c := &Cluster{Kube: kc, Clock: clocktesting.NewFakePassiveClock(t0), Poll: time.Millisecond}
			err := c.WaitShape(ctx, sh, tt.images, 50*time.Millisecond)
			if (err != nil) != tt.wantErr {
				t.Fatalf("WaitShape = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantLease != nil {
				ls, _ := kc.CoordinationV1().Leases(SystemNamespace).List(ctx, metav1.ListOptions{})
				var got []string
				for _, l := range ls.Items {
					got = append(got, l.Name)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.wantLease) {
					t.Errorf("leases = %v, want %v", got, tt.wantLease)
				}
			}
		})
	}
}

func TestEnsureGateway(t *testing.T) {
	ctx := context.Background()
	kc := fake.NewClientset()
	c := &Cluster{Kube: kc, Clock: clocktesting.NewFakePassiveClock(t0)}
	for i := 0; i < 2; i++ { // idempotent
		if err := c.EnsureGateway(ctx, SystemNamespace, "gw"); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := kc.CoreV1().Services(SystemNamespace).Get(ctx, "gw", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || len(svc.Spec.Ports) != 0 || len(svc.Spec.Selector) != 0 {
		t.Errorf("gateway service spec = %+v, want headless without ports or selector", svc.Spec)
	}
}
