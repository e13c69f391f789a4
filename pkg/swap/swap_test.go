package swap

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
)

// deployment is a Deployment as a client-side `kubectl apply -f` of upstream's leaves it: labels,
// kubectl's last-applied annotation, more than one container field.
func deployment(name, image string) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Generation: 1,
			Labels:      map[string]string{"app.kubernetes.io/component": name},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"kind":"Deployment"}`}},
		Spec: appsv1.DeploymentSpec{Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: image, Args: []string{"-x"},
					Env: []corev1.EnvVar{{Name: "POD_IP"}}, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8012}}}}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1},
	}
}

var (
	upstream = Images{"activator": "gcr.io/knative-releases/activator@sha256:aa", "autoscaler": "gcr.io/knative-releases/autoscaler@sha256:bb"}
	thaw     = Images{"activator": "r.example/thaw/activator@sha256:cc", "autoscaler": "r.example/thaw/autoscaler@sha256:dd"}
)

func newCluster() (*fake.Clientset, map[string]*appsv1.Deployment) {
	before := map[string]*appsv1.Deployment{}
	for _, c := range Components {
		before[c] = deployment(c, upstream[c])
	}
	return fake.NewClientset(before["activator"], before["autoscaler"]), before
}

func get(t *testing.T, kc kubernetes.Interface, c string) *appsv1.Deployment {
	t.Helper()
	d, err := kc.AppsV1().Deployments(Namespace).Get(context.Background(), c, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// withoutImage is d's spec, labels and annotations with the container's image blanked and the swap's
// annotation dropped: what must not change.
func withoutImage(d *appsv1.Deployment) *appsv1.Deployment {
	d = d.DeepCopy()
	for i := range d.Spec.Template.Spec.Containers {
		d.Spec.Template.Spec.Containers[i].Image = ""
	}
	delete(d.Annotations, Annotation)
	delete(d.Annotations, AnnotationTo)
	d.ResourceVersion, d.ManagedFields = "", nil
	return d
}

func TestSwapUnswapChangesOnlyImages(t *testing.T) {
	ctx := context.Background()
	kc, before := newCluster()
	remembered, err := Swap(ctx, kc, thaw, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(remembered, upstream) {
		t.Fatalf("remembered %v, want %v", remembered, upstream)
	}
	for _, c := range Components {
		d := get(t, kc, c)
		if img, _ := image(d, c); img != thaw[c] || d.Annotations[Annotation] != upstream[c] || d.Annotations[AnnotationTo] != thaw[c] {
			t.Errorf("%s after swap: image %s, %s=%q", c, img, Annotation, d.Annotations[Annotation])
		}
		if !reflect.DeepEqual(withoutImage(d), withoutImage(before[c])) {
			t.Errorf("%s: the swap changed more than the image:\n%+v\n%+v", c, withoutImage(d), withoutImage(before[c]))
		}
	}
	// Swapping again (another Thaw build) keeps upstream's image remembered.
	again := Images{"activator": "r.example/thaw/activator@sha256:ee"}
	if remembered, err = Swap(ctx, kc, again, Options{}); err != nil || remembered["activator"] != upstream["activator"] {
		t.Fatalf("second swap remembered %v, %v", remembered, err)
	}
	back, err := Unswap(ctx, kc, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, upstream) {
		t.Fatalf("unswap went back to %v, want %v", back, upstream)
	}
	for _, c := range Components {
		d := get(t, kc, c)
		d.ResourceVersion, d.ManagedFields = "", nil
		b := before[c].DeepCopy()
		b.ResourceVersion = ""
		if !reflect.DeepEqual(d.ObjectMeta, b.ObjectMeta) || !reflect.DeepEqual(d.Spec, b.Spec) {
			t.Errorf("%s after unswap differs from before:\n%+v\n%+v", c, d, b)
		}
	}
	// Nothing remembered now: unswap needs images.
	if _, err := Unswap(ctx, kc, nil, Options{}); err == nil || !strings.Contains(err.Error(), "not swapped") {
		t.Fatalf("unswap of an unswapped install: %v", err)
	}
	if back, err := Unswap(ctx, kc, Images{"autoscaler": "x/autoscaler:1"}, Options{}); err != nil || len(back) != 1 {
		t.Fatalf("unswap to a named image: %v, %v", back, err)
	}
}

// An image changed since the swap (upstream's upgraded with kubectl apply, say) is not undone by
// unswap, and a new swap remembers the image found then.
func TestChangedSinceSwap(t *testing.T) {
	ctx := context.Background()
	kc, _ := newCluster()
	if _, err := Swap(ctx, kc, thaw, Options{}); err != nil {
		t.Fatal(err)
	}
	upgraded := "gcr.io/knative-releases/activator@sha256:ff"
	d := get(t, kc, "activator")
	d.Spec.Template.Spec.Containers[0].Image = upgraded
	if _, err := kc.AppsV1().Deployments(Namespace).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Unswap(ctx, kc, nil, Options{}); err == nil || !strings.Contains(err.Error(), "changed since") {
		t.Fatalf("unswap after someone changed the image: %v", err)
	}
	if img, _ := image(get(t, kc, "activator"), "activator"); img != upgraded {
		t.Fatalf("activator runs %s after the refused unswap", img)
	}
	remembered, err := Swap(ctx, kc, thaw, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if remembered["activator"] != upgraded || remembered["autoscaler"] != upstream["autoscaler"] {
		t.Fatalf("swap after the change remembered %v", remembered)
	}
	if back, err := Unswap(ctx, kc, nil, Options{}); err != nil || back["activator"] != upgraded {
		t.Fatalf("unswap = %v, %v", back, err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		in Images
		ok bool
	}{
		{thaw, true},
		{Images{"activator": "a"}, true},
		{Images{}, false},
		{Images{"controller": "c"}, false},
		{Images{"activator": ""}, false},
	} {
		if err := tc.in.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%v) = %v", tc.in, err)
		}
	}
}

// step advances clk by d whenever the waiter under test sleeps on it, calling each (if set) just
// before every step, until done yields (testutil.StepUntil: bounded by testutil.Timeout).
func step(t *testing.T, clk *clocktesting.FakeClock, d time.Duration, done <-chan error, each func()) error {
	t.Helper()
	var err error
	testutil.StepUntil(t, hookedClock{clk, each}, d, func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	return err
}

// hookedClock calls before ahead of each step of its clock.
type hookedClock struct {
	*clocktesting.FakeClock
	before func()
}

func (c hookedClock) Step(d time.Duration) {
	if c.before != nil {
		c.before()
	}
	c.FakeClock.Step(d)
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	t.Run("rolls out after a few checks", func(t *testing.T) {
		kc, _ := newCluster()
		d := get(t, kc, "activator")
		d.Generation, d.Status.UpdatedReplicas = 2, 0
		if _, err := kc.AppsV1().Deployments(Namespace).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		clk := clocktesting.NewFakeClock(time.Unix(0, 0))
		done := make(chan error, 1)
		go func() {
			done <- Wait(ctx, kc, Images{"activator": upstream["activator"]}, Options{Clock: clk, Interval: time.Second, Timeout: time.Minute})
		}()
		ticks := 0
		err := step(t, clk, time.Second, done, func() {
			if ticks++; ticks == 3 {
				d.Status.ObservedGeneration, d.Status.UpdatedReplicas = 2, 1
				if _, err := kc.AppsV1().Deployments(Namespace).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
					t.Error(err)
				}
			}
		})
		if err != nil || ticks < 3 {
			t.Fatalf("Wait = %v after %d ticks", err, ticks)
		}
	})
	t.Run("times out", func(t *testing.T) {
		kc, _ := newCluster()
		d := get(t, kc, "autoscaler")
		d.Status.AvailableReplicas = 0
		if _, err := kc.AppsV1().Deployments(Namespace).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		clk := clocktesting.NewFakeClock(time.Unix(0, 0))
		done := make(chan error, 1)
		go func() {
			done <- Wait(ctx, kc, upstream, Options{Clock: clk, Interval: time.Second, Timeout: 10 * time.Second})
		}()
		if err := step(t, clk, time.Second, done, nil); err == nil || !strings.Contains(err.Error(), "rollout not done") {
			t.Fatalf("Wait = %v", err)
		}
	})
	t.Run("image changed by someone else", func(t *testing.T) {
		kc, _ := newCluster()
		if err := Wait(ctx, kc, thaw, Options{}); err == nil || !strings.Contains(err.Error(), "someone else") {
			t.Fatalf("Wait = %v", err)
		}
	})
}
