package kpa

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	upconfig "knative.dev/serving/pkg/autoscaler/config"
	upkpares "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	upres "knative.dev/serving/pkg/reconciler/autoscaling/resources"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
)

// Differential: the decider spec, Metric and SKS built here match
// upstream's MakeDecider, MakeMetric and MakeSKS for valid inputs.
func TestBuildersMatchUpstream(t *testing.T) {
	configs := []map[string]string{
		nil,
		{"container-concurrency-target-percentage": "80", "container-concurrency-target-default": "50",
			"target-burst-capacity": "-1", "stable-window": "2m", "panic-window-percentage": "25",
			"max-scale-up-rate": "3", "max-scale-down-rate": "4", "activator-capacity": "50",
			"initial-scale": "3", "min-scale": "1", "max-scale": "10", "scale-down-delay": "10s"},
		{"requests-per-second-target-default": "33", "target-burst-capacity": "0", "allow-zero-initial-scale": "true",
			"panic-threshold-percentage": "300"},
	}
	pas := []struct {
		name string
		opts []paOpt
	}{
		{name: "plain"},
		{name: "cc", opts: []paOpt{withCC(10)}},
		{name: "cc and target", opts: []paOpt{withCC(10), withAnn(asconfig.TargetAnnotationKey, "25")}},
		{name: "target below cc", opts: []paOpt{withCC(10), withAnn(asconfig.TargetAnnotationKey, "3.5")}},
		{name: "rps", opts: []paOpt{withAnn(asconfig.MetricAnnotationKey, "rps"),
			withAnn(asconfig.TargetAnnotationKey, "150"), withAnn(asconfig.TargetUtilizationPercentageKey, "90")}},
		{name: "rps default target", opts: []paOpt{withAnn(asconfig.MetricAnnotationKey, "rps")}},
		{name: "no metric annotation", opts: []paOpt{func(pa *autoscalingv1alpha1.PodAutoscaler) {
			delete(pa.Annotations, asconfig.MetricAnnotationKey)
		}}},
		{name: "all knobs", opts: []paOpt{
			withAnn(asconfig.TargetUtilizationPercentageKey, "55"),
			withAnn(asconfig.TargetBurstCapacityKey, "17"),
			withAnn(asconfig.WindowAnnotationKey, "23s"),
			withAnn(asconfig.PanicWindowPercentageAnnotationKey, "13"),
			withAnn(asconfig.PanicThresholdPercentageAnnotationKey, "150"),
			withAnn(asconfig.ScaleDownDelayAnnotationKey, "30s"),
			withAnn(asconfig.ActivationScaleKey, "3"),
			withAnn(asconfig.InitialScaleAnnotationKey, "4"),
		}},
		{name: "legacy keys", opts: []paOpt{
			withAnn("autoscaling.knative.dev/targetUtilizationPercentage", "60"),
			withAnn("autoscaling.knative.dev/targetBurstCapacity", "0"),
			withAnn("autoscaling.knative.dev/panicWindowPercentage", "50"),
			withAnn("autoscaling.knative.dev/initialScale", "0"),
		}},
		{name: "unreachable", opts: []paOpt{unreachable, withAnn(asconfig.MinScaleAnnotationKey, "2")}},
		{name: "tbc -1", opts: []paOpt{withAnn(asconfig.TargetBurstCapacityKey, "-1")}},
	}
	for ci, data := range configs {
		upCfg, err := upconfig.NewConfigFromMap(data)
		if err != nil {
			t.Fatalf("upstream config %d: %v", ci, err)
		}
		ourCfg, err := asconfig.NewConfigFromMap(data)
		if err != nil {
			t.Fatalf("config %d: %v", ci, err)
		}
		dcfg := &asconfig.DeploymentConfig{ProgressDeadline: asconfig.DefaultProgressDeadline}
		for _, tc := range pas {
			pa := newPA(tc.opts...)
			s := Resolve(ourCfg, dcfg, pa)
			// (initial-scale 0 without allow-zero-initial-scale is reported
			// invalid; both sides then use the ConfigMap's initial scale.)
			up := upkpares.MakeDecider(pa, upCfg).Spec
			want := decider.Spec{
				MaxScaleUpRate: up.MaxScaleUpRate, MaxScaleDownRate: up.MaxScaleDownRate,
				ScalingMetric: up.ScalingMetric, TargetValue: up.TargetValue, TotalValue: up.TotalValue,
				TargetBurstCapacity: up.TargetBurstCapacity, ActivatorCapacity: up.ActivatorCapacity,
				PanicThreshold: up.PanicThreshold, StableWindow: up.StableWindow, ScaleDownDelay: up.ScaleDownDelay,
				InitialScale: up.InitialScale, Reachable: up.Reachable, ActivationScale: up.ActivationScale,
			}
			if s.Decider != want {
				t.Errorf("config %d %s: decider spec\n got %+v\nwant %+v", ci, tc.name, s.Decider, want)
			}

			lo, hi := pa.ScaleBounds(upCfg)
			if s.MinScale != lo || s.MaxScale != hi {
				t.Errorf("config %d %s: bounds %d/%d, upstream %d/%d", ci, tc.name, s.MinScale, s.MaxScale, lo, hi)
			}
			if got, want := s.InitialScale, upkpares.GetInitialScale(upCfg, pa); got != want {
				t.Errorf("config %d %s: initial scale %d, upstream %d", ci, tc.name, got, want)
			}

			target := scrapeTarget(&s, "rev-private")
			upTarget := "rev-private"
			if tbc, ok := pa.TargetBC(); (ok && tbc == -1) || (!ok && upCfg.TargetBurstCapacity == -1) {
				upTarget = ""
			}
			if target != upTarget {
				t.Errorf("config %d %s: scrape target %q, upstream %q", ci, tc.name, target, upTarget)
			}
			m, um := MakeMetric(pa, &s, target), upres.MakeMetric(pa, upTarget, upCfg)
			if !equality.Semantic.DeepEqual(m, um) {
				t.Errorf("config %d %s: metric\n got %+v\nwant %+v", ci, tc.name, m, um)
			}
			for _, mode := range []nv1alpha1.ServerlessServiceOperationMode{nv1alpha1.SKSOperationModeProxy, nv1alpha1.SKSOperationModeServe} {
				if got, want := MakeSKS(pa, mode, 7), upres.MakeSKS(pa, mode, 7); !equality.Semantic.DeepEqual(got, want) {
					t.Errorf("config %d %s: SKS\n got %+v\nwant %+v", ci, tc.name, got, want)
				}
			}
		}
	}
}

// NumActivators against a table derived from upstream's computeNumActivators.
func TestNumActivators(t *testing.T) {
	for _, tc := range []struct {
		ready              int
		tbc, total, actCap float64
		want               int32
	}{
		{0, 0, 100, 100, 2},
		{50, 0, 100, 100, 2},
		{0, 211, 100, 100, 3},
		{1, 211, 100, 100, 4},
		{10, 211, 100, 100, 13},
		{10, -1, 100, 100, 10},
		{1, -1, 100, 100, 2},
		{3, 50, 10, 25, 4},
		{0, 1, 1, 1000, 2},
	} {
		s := decider.Spec{TargetBurstCapacity: tc.tbc, TotalValue: tc.total, ActivatorCapacity: tc.actCap}
		if got := NumActivators(tc.ready, s); got != tc.want {
			t.Errorf("NumActivators(%d, tbc %v, total %v, cap %v) = %d, want %d",
				tc.ready, tc.tbc, tc.total, tc.actCap, got, tc.want)
		}
	}
}

var _ = time.Second
