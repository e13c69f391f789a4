package kpa

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/asconfig"
)

// The table of upstream's computeActiveCondition (kpa.go), row by row.
func TestComputeActiveCondition(t *testing.T) {
	const (
		T = corev1.ConditionTrue
		F = corev1.ConditionFalse
		U = corev1.ConditionUnknown
	)
	for _, tc := range []struct {
		name       string
		want       int
		ready      int
		minScale   string // annotation; "" none
		zeroInit   bool   // not initialized, initial-scale 0 allowed → threshold 0
		from       corev1.ConditionStatus
		wantStatus corev1.ConditionStatus
		wantReason string
	}{
		{name: "want 0 → inactive", want: 0, ready: 3, from: T, wantStatus: F, wantReason: reasonNoTraffic},
		{name: "want 0 while activating → timed out", want: 0, ready: 0, from: U, wantStatus: F, wantReason: reasonTimedOut},
		{name: "want>0, ready<min → activating", want: 2, ready: 1, minScale: "2", from: T, wantStatus: U, wantReason: reasonQueued},
		{name: "want>0, ready≥min → active", want: 2, ready: 2, from: F, wantStatus: T},
		{name: "-1, <min, inactive → inactive", want: -1, ready: 0, from: F, wantStatus: F, wantReason: reasonNoTraffic},
		{name: "-1, <min, activating → activating", want: -1, ready: 0, from: U, wantStatus: U, wantReason: reasonQueued},
		{name: "-1, <min, active → activating", want: -1, ready: 0, from: T, wantStatus: U, wantReason: reasonQueued},
		{name: "-1, ≥min, inactive → inactive", want: -1, ready: 1, from: F, wantStatus: F, wantReason: reasonNoTraffic},
		{name: "-1, ≥min=0, activating → inactive", want: -1, ready: 0, zeroInit: true, from: U, wantStatus: F,
			wantReason: reasonNoTraffic},
		{name: "-1, ≥min>0, activating → active", want: -1, ready: 1, from: U, wantStatus: T},
		{name: "-1, ≥min>0, active → active", want: -1, ready: 1, from: T, wantStatus: T},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []paOpt{setActive(tc.from, reasonQueued, time.Minute)}
			if tc.from == corev1.ConditionFalse {
				opts = []paOpt{setActive(tc.from, reasonNoTraffic, time.Minute)}
			}
			if tc.minScale != "" {
				opts = append(opts, withAnn(asconfig.MinScaleAnnotationKey, tc.minScale))
			}
			cfg := asconfig.DefaultConfig()
			if tc.zeroInit {
				cfg.AllowZeroInitialScale = true
				opts = append(opts, withAnn(asconfig.InitialScaleAnnotationKey, "0"), notInitialized)
			}
			pa := newPA(opts...)
			s := Resolve(cfg, &asconfig.DeploymentConfig{ProgressDeadline: time.Minute}, pa)
			computeActiveCondition(pa, &s, podCounts{want: tc.want, ready: tc.ready})
			c := pa.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive)
			if c.Status != tc.wantStatus || (tc.wantReason != "" && c.Reason != tc.wantReason) {
				t.Fatalf("Active = %s/%s, want %s/%s", c.Status, c.Reason, tc.wantStatus, tc.wantReason)
			}
		})
	}
}
