package kpa

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
)

// TestWake: the wake path patches /scale from 0 to the decider's want within
// the reconcile's bounds, writes nothing else, and leaves every other case to
// the reconcile.
func TestWake(t *testing.T) {
	deleting := func(pa *autoscalingv1alpha1.PodAutoscaler) { pa.DeletionTimestamp = &metav1.Time{Time: t0} }
	cases := []struct {
		name     string
		opts     []paOpt
		noPA     bool
		replicas *int32
		desired  int32
		want     []int32
	}{
		{name: "from zero", replicas: ptr32(0), desired: 2, want: []int32{2}},
		{name: "max-scale bounds it", opts: []paOpt{withAnn("autoscaling.knative.dev/max-scale", "3")},
			replicas: ptr32(0), desired: 7, want: []int32{3}},
		{name: "min-scale bounds it", opts: []paOpt{withAnn("autoscaling.knative.dev/min-scale", "4")},
			replicas: ptr32(0), desired: 1, want: []int32{4}},
		{name: "not at zero", replicas: ptr32(1), desired: 3},
		{name: "decider wants none", replicas: ptr32(0), desired: 0},
		{name: "no decision", replicas: ptr32(0), desired: -1},
		{name: "no scale target yet", desired: 2},
		{name: "PA gone", noPA: true, replicas: ptr32(0), desired: 2},
		{name: "PA being deleted", opts: []paOpt{deleting}, replicas: ptr32(0), desired: 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			pa := newPA(append([]paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, time.Hour), withDesired(0)}, c.opts...)...)
			if !c.noPA {
				h.addPA(pa)
				h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
			}
			h.scales.replicas = c.replicas
			h.deciders.set(key, multiscaler.Status{DesiredScale: c.desired, ExcessBurstCapacity: -1})
			h.deciders.Create(key, decider.Spec{}, multiscaler.Labels{})
			h.serving.ClearActions()
			h.net.ClearActions()
			if err := h.r.wakeOne(context.Background(), key); err != nil {
				t.Fatalf("wakeOne = %v; it must leave retries to the reconcile", err)
			}
			if got := h.scales.patches; !slices.Equal(got, c.want) {
				t.Errorf("patches = %v, want %v", got, c.want)
			}
			if a := append(h.serving.Actions(), h.net.Actions()...); len(a) != 0 {
				t.Errorf("the wake path wrote %v; it only patches /scale", a)
			}
		})
	}
}

// TestInformWakesOnlyWhenPodsWanted: the multiscaler's callback always
// reconciles, and queues a wake only when the decider wants pods.
func TestInformWakesOnlyWhenPodsWanted(t *testing.T) {
	for _, desired := range []int32{-1, 0, 2} {
		h := newHarness(t)
		h.deciders.set(key, multiscaler.Status{DesiredScale: desired})
		h.deciders.Create(key, decider.Spec{}, multiscaler.Labels{})
		h.r.Inform(key)
		if h.r.queue.Len() != 1 {
			t.Errorf("desired %d: reconcile queue holds %d, want 1", desired, h.r.queue.Len())
		}
		want := 0
		if desired > 0 {
			want = 1
		}
		if got := h.r.wake.queue.Len(); got != want {
			t.Errorf("desired %d: wake queue holds %d, want %d", desired, got, want)
		}
	}
}
