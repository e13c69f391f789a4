package kpa

import (
	"errors"
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/kmeta"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
)

// Settings is everything the reconciler derives from a PA's annotations and
// the ConfigMaps. An annotation the webhook would reject is not used (the
// ConfigMap value is, so a bad value cannot break the math); Invalid
// collects those problems for the PA's status.
type Settings struct {
	Decider      decider.Spec
	StableWindow time.Duration
	PanicWindow  time.Duration
	// TBC is the target burst capacity (−1: activator always in the path).
	TBC float64
	// MinScale and MaxScale are the bounds (MinScale is 0 when the PA is
	// unreachable; MaxScale 0 is unbounded).
	MinScale, MaxScale int32
	InitialScale       int32
	// Retention is scale-to-zero-pod-retention-period (0 when unreachable).
	Retention         time.Duration
	ActivationTimeout time.Duration
	Invalid           error
}

// pick returns v when the annotation was present and valid, def otherwise,
// and collects the validation error.
func pick[T any](v T, ok bool, err error, def T, errs *[]error) T {
	if err != nil {
		*errs = append(*errs, err)
		return def
	}
	if ok {
		return v
	}
	return def
}

// activationTimeoutBuffer lets the revision reconciler report pod failures
// after the progress deadline before the autoscaler gives up on activation.
const activationTimeoutBuffer = 30 * time.Second

// minPanicWindow is the collector's bucket size: the shortest window.
const minPanicWindow = time.Second

// Resolve computes the Settings of pa.
func Resolve(cfg *asconfig.Config, dcfg *asconfig.DeploymentConfig, pa *autoscalingv1alpha1.PodAutoscaler) Settings {
	ann := pa.Annotations
	var errs []error
	reachable := pa.Spec.Reachability != autoscalingv1alpha1.ReachabilityUnreachable

	m, ok, err := asconfig.Metric(ann, asconfig.KPA)
	scalingMetric := pick(m, ok, err, asconfig.MetricConcurrency, &errs)

	// Target and total per pod, as upstream's ResolveMetricTarget.
	var total, tu float64
	if scalingMetric == asconfig.MetricRPS {
		total, tu = cfg.RPSTargetDefault, cfg.TargetUtilization
	} else {
		total = float64(pa.Spec.ContainerConcurrency)
		if total == 0 {
			total = cfg.ContainerConcurrencyTargetDefault
		}
		tu = cfg.ContainerConcurrencyTargetFraction
	}
	if t, ok, err := asconfig.Target(ann); err != nil {
		errs = append(errs, err)
	} else if ok {
		total = t
		if scalingMetric == asconfig.MetricConcurrency && pa.Spec.ContainerConcurrency != 0 {
			// Never aim above what a pod is allowed to take.
			total = math.Min(t, float64(pa.Spec.ContainerConcurrency))
		}
	}
	tu = pick3(asconfig.TargetUtilization(ann))(tu, &errs)
	target := math.Max(asconfig.TargetMin, total*tu)

	pth := pick3(asconfig.PanicThresholdPercentage(ann))(cfg.PanicThresholdPercentage, &errs)
	tbc := pick3(asconfig.TargetBurstCapacity(ann))(cfg.TargetBurstCapacity, &errs)
	sdd := pick3(asconfig.ScaleDownDelay(ann))(cfg.ScaleDownDelay, &errs)
	act := pick3(asconfig.ActivationScale(ann))(0, &errs)
	sw := pick3(asconfig.Window(ann))(cfg.StableWindow, &errs)
	pwp := pick3(asconfig.PanicWindowPercentage(ann))(cfg.PanicWindowPercentage, &errs)
	initial := pick3(asconfig.InitialScale(ann, cfg.AllowZeroInitialScale))(cfg.InitialScale, &errs)

	minS := pick3(asconfig.MinScale(ann))(cfg.MinScale, &errs)
	maxS := pick3(asconfig.MaxScale(ann))(cfg.MaxScale, &errs)
	if maxS != 0 && minS > maxS {
		errs = append(errs, errors.New("min-scale is greater than max-scale"))
	}
	if !reachable {
		minS = 0
	}
	retention := pick3(asconfig.ScaleToZeroPodRetention(ann))(cfg.ScaleToZeroPodRetentionPeriod, &errs)
	if !reachable {
		retention = 0
	}
	pd := pick3(asconfig.ProgressDeadline(ann))(dcfg.ProgressDeadline, &errs)
	_, _, err = asconfig.MetricAggregationAlgorithm(ann)
	if err != nil {
		errs = append(errs, err)
	}

	pw := time.Duration(float64(sw) * pwp / 100).Round(time.Second)
	if pw < minPanicWindow {
		pw = minPanicWindow
	}
	return Settings{
		Decider: decider.Spec{
			MaxScaleUpRate:      cfg.MaxScaleUpRate,
			MaxScaleDownRate:    cfg.MaxScaleDownRate,
			ScalingMetric:       scalingMetric,
			TargetValue:         target,
			TotalValue:          total,
			TargetBurstCapacity: tbc,
			ActivatorCapacity:   cfg.ActivatorCapacity,
			PanicThreshold:      pth / 100,
			StableWindow:        sw,
			ScaleDownDelay:      sdd,
			InitialScale:        initial,
			Reachable:           reachable,
			ActivationScale:     act,
		},
		StableWindow:      sw,
		PanicWindow:       pw,
		TBC:               tbc,
		MinScale:          minS,
		MaxScale:          maxS,
		InitialScale:      initial,
		Retention:         retention,
		ActivationTimeout: pd + activationTimeoutBuffer,
		Invalid:           errors.Join(errs...),
	}
}

// pick3 adapts a getter's (value, ok, err) to pick with a default.
func pick3[T any](v T, ok bool, err error) func(def T, errs *[]error) T {
	return func(def T, errs *[]error) T { return pick(v, ok, err, def, errs) }
}

// scrapeTarget is the service the Metric scrapes: none with TBC −1, where
// the activator sees every request.
func scrapeTarget(s *Settings, privateService string) string {
	if s.TBC == -1 {
		return ""
	}
	return privateService
}

// MakeMetric is the Metric of pa.
func MakeMetric(pa *autoscalingv1alpha1.PodAutoscaler, s *Settings, target string) *autoscalingv1alpha1.Metric {
	return &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       pa.Namespace,
			Name:            pa.Name,
			Annotations:     copyMap(pa.Annotations, ""),
			Labels:          copyMap(pa.Labels, ""),
			OwnerReferences: []metav1.OwnerReference{*kmeta.NewControllerRef(pa)},
		},
		Spec: autoscalingv1alpha1.MetricSpec{
			StableWindow: s.StableWindow,
			PanicWindow:  s.PanicWindow,
			ScrapeTarget: target,
		},
	}
}

// MakeSKS is the ServerlessService of pa. Its annotations leave out the
// metric annotation, as upstream's.
func MakeSKS(pa *autoscalingv1alpha1.PodAutoscaler, mode nv1alpha1.ServerlessServiceOperationMode, numActivators int32) *nv1alpha1.ServerlessService {
	return &nv1alpha1.ServerlessService{
		ObjectMeta: metav1.ObjectMeta{
			Name:            pa.Name,
			Namespace:       pa.Namespace,
			Labels:          copyMap(pa.Labels, ""),
			Annotations:     copyMap(pa.Annotations, asconfig.MetricAnnotationKey),
			OwnerReferences: []metav1.OwnerReference{*kmeta.NewControllerRef(pa)},
		},
		Spec: nv1alpha1.ServerlessServiceSpec{
			Mode:          mode,
			ObjectRef:     pa.Spec.ScaleTargetRef,
			ProtocolType:  pa.Spec.ProtocolType,
			NumActivators: numActivators,
		},
	}
}

// copyMap copies m without the key skip, nor the keep-alive annotations
// the autoscaler writes on the PA (copied, each write would rewrite the
// Metric and the SKS).
func copyMap(m map[string]string, skip string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != skip && k != asconfig.KeepAliveStateAnnotationKey && k != asconfig.KeepAliveWindowsAnnotationKey {
			out[k] = v
		}
	}
	return out
}

// minActivators is the smallest activator subset of a revision.
const minActivators = 2

// NumActivators is how many activators a revision's public endpoints get:
// enough to take the ready pods' capacity plus the burst capacity.
func NumActivators(ready int, s decider.Spec) int32 {
	if s.TargetBurstCapacity == 0 {
		return minActivators
	}
	c := float64(ready) * s.TotalValue
	if s.TargetBurstCapacity > 0 {
		c += s.TargetBurstCapacity
	}
	return int32(math.Max(minActivators, math.Ceil(c/s.ActivatorCapacity)))
}

// applyBounds clamps x into [lo, hi]; hi 0 is unbounded.
func applyBounds(lo, hi, x int32) int32 {
	if x < lo {
		return lo
	}
	if hi != 0 && x > hi {
		return hi
	}
	return x
}
