package swap

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func deployment(name, image string) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Generation: 1},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: name, Image: image, Args: []string{"-x"},
				Env: []corev1.EnvVar{{Name: "POD_IP"}}}}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1},
	}
}

func TestApplyChangesOnlyImages(t *testing.T) {
	act, as := deployment("activator", "up/activator"), deployment("autoscaler", "up/autoscaler")
	kc := fake.NewClientset(act, as)
	want := Images{"activator": "ko.local/thaw/activator:dev", "autoscaler": "ko.local/thaw/autoscaler:dev"}
	// The fake client neither bumps generations nor rolls out, so the status stays "available".
	if err := Apply(context.Background(), kc, want, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := Current(context.Background(), kc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Current = %v, want %v", got, want)
	}
	d, _ := kc.AppsV1().Deployments(Namespace).Get(context.Background(), "activator", metav1.GetOptions{})
	before := deployment("activator", "ko.local/thaw/activator:dev")
	if !reflect.DeepEqual(d.Spec, before.Spec) {
		t.Fatalf("spec changed beyond the image:\n%+v\n%+v", d.Spec, before.Spec)
	}
}

func TestWaitRolloutTimesOut(t *testing.T) {
	act, as := deployment("activator", "a"), deployment("autoscaler", "b")
	as.Status.AvailableReplicas = 0
	kc := fake.NewClientset(act, as)
	err := WaitRollout(context.Background(), kc, Images{"activator": "a", "autoscaler": "b"}, 600*time.Millisecond)
	if err == nil {
		t.Fatal("unavailable deployment accepted")
	}
}

func TestWaitRolloutDetectsForeignImage(t *testing.T) {
	kc := fake.NewClientset(deployment("activator", "other"), deployment("autoscaler", "b"))
	if err := WaitRollout(context.Background(), kc, Images{"activator": "a", "autoscaler": "b"}, 5*time.Second); err == nil {
		t.Fatal("wrong image accepted")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		im Images
		ok bool
	}{
		{Images{"activator": "a", "autoscaler": "b"}, true},
		{Images{"activator": "a"}, false},
		{Images{"activator": "a", "autoscaler": "b", "controller": "c"}, false},
		{Images{"activator": "", "autoscaler": "b"}, false},
	} {
		if err := tc.im.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%v) = %v", tc.im, err)
		}
	}
}

func TestPatchShape(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal(patch("activator", "img"), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []any{map[string]any{"name": "activator", "image": "img"}}}}}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("patch = %v", m)
	}
}

// TestRestore: what an experiment found is put back, and nothing is applied when it is still in place.
func TestRestore(t *testing.T) {
	want := Images{"activator": "a:1", "autoscaler": "s:1"}
	tests := []struct {
		name      string
		act, as   string
		wantApply bool
	}{
		{name: "still in place", act: "a:1", as: "s:1"},
		{name: "activator swapped", act: "a:2", as: "s:1", wantApply: true},
		{name: "both swapped", act: "a:2", as: "s:2", wantApply: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kc := fake.NewClientset(deployment("activator", tc.act), deployment("autoscaler", tc.as))
			var applied Images
			err := Restore(context.Background(), kc, want, func(_ context.Context, im Images) error { applied = im; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if (applied != nil) != tc.wantApply || (applied != nil && applied["activator"] != "a:1") {
				t.Errorf("applied %v, want apply %v of %v", applied, tc.wantApply, want)
			}
		})
	}
}
