package asconfig

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Annotation keys (on the Revision, copied to its PodAutoscaler). Where upstream also accepts a legacy
// camelCase spelling, the getters look the kebab-case key up first, then the legacy one.
const (
	annotationPrefix = "autoscaling.knative.dev/"

	ClassAnnotationKey                      = annotationPrefix + "class"
	MetricAnnotationKey                     = annotationPrefix + "metric"
	TargetAnnotationKey                     = annotationPrefix + "target"
	TargetUtilizationPercentageKey          = annotationPrefix + "target-utilization-percentage"
	TargetBurstCapacityKey                  = annotationPrefix + "target-burst-capacity"
	MinScaleAnnotationKey                   = annotationPrefix + "min-scale"
	MaxScaleAnnotationKey                   = annotationPrefix + "max-scale"
	InitialScaleAnnotationKey               = annotationPrefix + "initial-scale"
	ActivationScaleKey                      = annotationPrefix + "activation-scale"
	ScaleDownDelayAnnotationKey             = annotationPrefix + "scale-down-delay"
	ScaleToZeroPodRetentionPeriodKey        = annotationPrefix + "scale-to-zero-pod-retention-period"
	WindowAnnotationKey                     = annotationPrefix + "window"
	PanicWindowPercentageAnnotationKey      = annotationPrefix + "panic-window-percentage"
	PanicThresholdPercentageAnnotationKey   = annotationPrefix + "panic-threshold-percentage"
	MetricAggregationAlgorithmKey           = annotationPrefix + "metric-aggregation-algorithm"
	ProgressDeadlineAnnotationKey           = "serving.knative.dev/progress-deadline"
	legacyTargetUtilizationPercentageKey    = annotationPrefix + "targetUtilizationPercentage"
	legacyTargetBurstCapacityKey            = annotationPrefix + "targetBurstCapacity"
	legacyMinScaleKey                       = annotationPrefix + "minScale"
	legacyMaxScaleKey                       = annotationPrefix + "maxScale"
	legacyInitialScaleKey                   = annotationPrefix + "initialScale"
	legacyScaleDownDelayKey                 = annotationPrefix + "scaleDownDelay"
	legacyScaleToZeroPodRetentionPeriodKey  = annotationPrefix + "scaleToZeroPodRetentionPeriod"
	legacyPanicWindowPercentageKey          = annotationPrefix + "panicWindowPercentage"
	legacyPanicThresholdPercentageKey       = annotationPrefix + "panicThresholdPercentage"
	legacyMetricAggregationAlgorithmKey     = annotationPrefix + "metricAggregationAlgorithm"
	legacyMetricAggregationAlgorithmAltName = "weightedExponential"
)

// Values of the metric and metric-aggregation-algorithm annotations.
const (
	MetricConcurrency = "concurrency"
	MetricRPS         = "rps"
	MetricCPU         = "cpu"
	MetricMemory      = "memory"

	AggregationLinear              = "linear"
	AggregationWeightedExponential = "weighted-exponential"
)

// lookup returns the first key of keys present in ann.
func lookup(ann map[string]string, keys ...string) (key, value string, ok bool) {
	for _, k := range keys {
		if v, ok := ann[k]; ok {
			return k, v, true
		}
	}
	return keys[0], "", false
}

func annErr(key, value, want string, err error) error {
	return &ValueError{Key: key, Value: value, Want: want, Err: unwrapNum(err)}
}

// The getters below share one contract. ok is what upstream's PodAutoscaler getter reports: the
// annotation is present and parses (so the value is what upstream's autoscaler would use). err is non-nil
// when upstream's admission webhook would reject the value (unparsable or out of range); a value that
// parses but is out of range comes back with ok true and an error, so the caller can choose.

func float64Ann(ann map[string]string, want string, valid func(float64) bool, keys ...string) (float64, bool, error) {
	k, s, present := lookup(ann, keys...)
	if !present {
		return 0, false, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, annErr(k, s, want, err)
	}
	if !valid(f) {
		return f, true, annErr(k, s, want, nil)
	}
	return f, true, nil
}

func int32Ann(ann map[string]string, want string, valid func(int32) bool, keys ...string) (int32, bool, error) {
	k, s, present := lookup(ann, keys...)
	if !present {
		return 0, false, nil
	}
	i, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, false, annErr(k, s, want, err)
	}
	if valid != nil && !valid(int32(i)) {
		return int32(i), true, annErr(k, s, want, nil)
	}
	return int32(i), true, nil
}

func durationAnn(ann map[string]string, want string, valid func(time.Duration) bool, keys ...string) (time.Duration, bool, error) {
	k, s, present := lookup(ann, keys...)
	if !present {
		return 0, false, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false, annErr(k, s, want, err)
	}
	if !valid(d) {
		return d, true, annErr(k, s, want, nil)
	}
	return d, true, nil
}

func wholeSeconds(d time.Duration) bool { return d.Round(time.Second) == d }

// Class is the autoscaling class annotation. A value in the knative.dev domain other than KPA or HPA is
// an error; other domains belong to custom autoscalers and are accepted.
func Class(ann map[string]string) (string, bool, error) {
	v, ok := ann[ClassAnnotationKey]
	if !ok {
		return "", false, nil
	}
	if strings.HasSuffix(v, ".knative.dev") && v != KPA && v != HPA {
		return v, true, annErr(ClassAnnotationKey, v, KPA+", "+HPA+" or a class outside knative.dev", nil)
	}
	return v, true, nil
}

// Metric is the metric annotation, validated for class (the class annotation, else defaultClass, the
// ConfigMap's pod-autoscaler-class): KPA takes concurrency or rps, HPA any non-empty metric.
func Metric(ann map[string]string, defaultClass string) (string, bool, error) {
	m, ok := ann[MetricAnnotationKey]
	if !ok {
		return "", false, nil
	}
	class := defaultClass
	if c, ok := ann[ClassAnnotationKey]; ok {
		class = c
	}
	switch {
	case class == KPA && m != MetricConcurrency && m != MetricRPS:
		return m, true, annErr(MetricAnnotationKey, m, "concurrency or rps (class "+KPA+")", nil)
	case class == HPA && m == "":
		return m, true, annErr(MetricAnnotationKey, m, "a metric name such as cpu or memory (class "+HPA+")", nil)
	}
	return m, true, nil
}

// Target is the per-pod target (concurrency or RPS), ≥ 0.01.
func Target(ann map[string]string) (float64, bool, error) {
	return float64Ann(ann, wantTarget, func(f float64) bool { return f >= TargetMin }, TargetAnnotationKey)
}

// TargetUtilization is target-utilization-percentage as a fraction (percentage in [1, 100] / 100).
func TargetUtilization(ann map[string]string) (float64, bool, error) {
	f, ok, err := float64Ann(ann, "a percentage in [1, 100]", func(f float64) bool { return f >= 1 && f <= 100 },
		TargetUtilizationPercentageKey, legacyTargetUtilizationPercentageKey)
	return f / 100, ok, err
}

// TargetBurstCapacity is ≥ 0, or -1 for "activator always in the path".
func TargetBurstCapacity(ann map[string]string) (float64, bool, error) {
	return float64Ann(ann, wantTBC, func(f float64) bool { return f >= 0 || f == -1 },
		TargetBurstCapacityKey, legacyTargetBurstCapacityKey)
}

func nonNegative(i int32) bool { return i >= 0 }

// MinScale is the lower scale bound, ≥ 0. See also ValidateAnnotations for min ≤ max.
func MinScale(ann map[string]string) (int32, bool, error) {
	return int32Ann(ann, wantNonNegInt, nonNegative, MinScaleAnnotationKey, legacyMinScaleKey)
}

// MaxScale is the upper scale bound, ≥ 0 (0: unlimited). See also ValidateAnnotations for max-scale-limit.
func MaxScale(ann map[string]string) (int32, bool, error) {
	return int32Ann(ann, wantNonNegInt, nonNegative, MaxScaleAnnotationKey, legacyMaxScaleKey)
}

// ActivationScale is the smallest non-zero scale, ≥ 2 (and within min/max: see ValidateAnnotations).
func ActivationScale(ann map[string]string) (int32, bool, error) {
	return int32Ann(ann, "an integer ≥ 2", func(i int32) bool { return i >= 2 }, ActivationScaleKey)
}

// InitialScale is the scale of a new revision: ≥ 1, or ≥ 0 when the cluster allows zero.
func InitialScale(ann map[string]string, allowZero bool) (int32, bool, error) {
	k, s, present := lookup(ann, InitialScaleAnnotationKey, legacyInitialScaleKey)
	if !present {
		return 0, false, nil
	}
	// The webhook parses with Atoi (64-bit); the reconciler with ParseInt(32): both must pass.
	i, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, false, annErr(k, s, wantInitialScale, err)
	}
	if i < 0 || (i == 0 && !allowZero) {
		return int32(i), true, annErr(k, s, wantInitialScale, nil)
	}
	return int32(i), true, nil
}

// ScaleDownDelay is in [0, 1h], whole seconds.
func ScaleDownDelay(ann map[string]string) (time.Duration, bool, error) {
	return durationAnn(ann, "a duration in [0s, 1h] in whole seconds",
		func(d time.Duration) bool { return d >= 0 && d <= WindowMax && wholeSeconds(d) },
		ScaleDownDelayAnnotationKey, legacyScaleDownDelayKey)
}

// ScaleToZeroPodRetention is scale-to-zero-pod-retention-period, in [0, 1h].
func ScaleToZeroPodRetention(ann map[string]string) (time.Duration, bool, error) {
	return durationAnn(ann, "a duration in [0s, 1h]", func(d time.Duration) bool { return d >= 0 && d <= WindowMax },
		ScaleToZeroPodRetentionPeriodKey, legacyScaleToZeroPodRetentionPeriodKey)
}

// Window is the stable window, in [6s, 1h], whole seconds. It has no legacy spelling.
func Window(ann map[string]string) (time.Duration, bool, error) {
	return durationAnn(ann, wantStableWindow,
		func(d time.Duration) bool { return d >= WindowMin && d <= WindowMax && d.Truncate(time.Second) == d },
		WindowAnnotationKey)
}

// PanicWindowPercentage is the panic window as a percentage of the stable window, in [1, 100].
func PanicWindowPercentage(ann map[string]string) (float64, bool, error) {
	return float64Ann(ann, wantPanicWindowPct,
		func(f float64) bool { return f >= PanicWindowPercentageMin && f <= PanicWindowPercentageMax },
		PanicWindowPercentageAnnotationKey, legacyPanicWindowPercentageKey)
}

// PanicThresholdPercentage is in [110, 1000].
func PanicThresholdPercentage(ann map[string]string) (float64, bool, error) {
	return float64Ann(ann, "a number in [110, 1000]",
		func(f float64) bool { return f >= PanicThresholdPercentageMin && f <= PanicThresholdPercentageMax },
		PanicThresholdPercentageAnnotationKey, legacyPanicThresholdPercentageKey)
}

// MetricAggregationAlgorithm is linear or weighted-exponential; the legacy value weightedExponential is
// returned as weighted-exponential. An empty value is accepted, like upstream.
func MetricAggregationAlgorithm(ann map[string]string) (string, bool, error) {
	k, v, ok := lookup(ann, MetricAggregationAlgorithmKey, legacyMetricAggregationAlgorithmKey)
	if !ok {
		return "", false, nil
	}
	switch v {
	case legacyMetricAggregationAlgorithmAltName:
		return AggregationWeightedExponential, true, nil
	case AggregationLinear, AggregationWeightedExponential, "":
		return v, true, nil
	}
	return v, true, annErr(k, v, "linear or weighted-exponential", nil)
}

// ProgressDeadline is serving.knative.dev/progress-deadline: a duration ≥ 0 in whole seconds.
func ProgressDeadline(ann map[string]string) (time.Duration, bool, error) {
	return durationAnn(ann, "a duration ≥ 0 in whole seconds",
		func(d time.Duration) bool { return d >= 0 && wholeSeconds(d) }, ProgressDeadlineAnnotationKey)
}

// ValidateAnnotations checks all autoscaling annotations as upstream's admission webhook does, including
// the constraints between keys and against cfg (max-scale-limit, allow-zero-initial-scale,
// pod-autoscaler-class). It returns every problem found, joined.
func ValidateAnnotations(cfg *Config, ann map[string]string) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	_, _, err := Class(ann)
	add(err)

	minS, _, err := MinScale(ann)
	add(err)
	maxS, maxSet, err := MaxScale(ann)
	add(err)
	if err != nil {
		maxS = 0 // the webhook compares an unparsable or negative bound as 0
	}
	if minS < 0 {
		minS = 0
	}
	if maxS != 0 && maxS < minS {
		add(&ValueError{Key: MinScaleAnnotationKey + " and " + MaxScaleAnnotationKey,
			Value: fmt.Sprintf("%d > %d", minS, maxS), Want: "min-scale ≤ max-scale (or max-scale 0, unlimited)"})
	}
	if maxSet && cfg.MaxScaleLimit > 0 && (maxS == 0 || maxS > cfg.MaxScaleLimit) {
		k, v, _ := lookup(ann, MaxScaleAnnotationKey, legacyMaxScaleKey)
		add(annErr(k, v, fmt.Sprintf("an integer in [1, %d] (max-scale-limit)", cfg.MaxScaleLimit), nil))
	}
	if v, ok := ann[ActivationScaleKey]; ok {
		act, err := strconv.ParseInt(v, 10, 32)
		switch {
		case err != nil:
			add(annErr(ActivationScaleKey, v, "an integer ≥ 2", err))
		case int64(minS) > act:
			add(annErr(ActivationScaleKey, v, fmt.Sprintf("an integer ≥ min-scale (%d)", minS), nil))
		case maxS != 0 && int64(maxS) < act:
			add(annErr(ActivationScaleKey, v, fmt.Sprintf("an integer ≤ max-scale (%d)", maxS), nil))
		case act < 2:
			add(annErr(ActivationScaleKey, v, "an integer ≥ 2", nil))
		}
	}

	for _, get := range []func(map[string]string) (float64, bool, error){
		PanicWindowPercentage, PanicThresholdPercentage, Target, TargetUtilization, TargetBurstCapacity,
	} {
		_, _, err := get(ann)
		add(err)
	}
	for _, get := range []func(map[string]string) (time.Duration, bool, error){
		Window, ScaleToZeroPodRetention, ScaleDownDelay,
	} {
		_, _, err := get(ann)
		add(err)
	}
	if _, _, err := Metric(ann, cfg.PodAutoscalerClass); err != nil {
		add(err)
	}
	// The webhook checks the algorithm only for KPA-class revisions (custom autoscalers have their own).
	if ann[ClassAnnotationKey] == KPA {
		_, _, err := MetricAggregationAlgorithm(ann)
		add(err)
	}
	if k, v, ok := lookup(ann, InitialScaleAnnotationKey, legacyInitialScaleKey); ok {
		// The webhook uses Atoi, which admits values beyond int32 that the reconciler then ignores.
		i, err := strconv.Atoi(v)
		switch {
		case err != nil:
			add(annErr(k, v, wantInitialScale, err))
		case i < 0 || (i == 0 && !cfg.AllowZeroInitialScale):
			add(annErr(k, v, wantInitialScale, nil))
		}
	}
	return errors.Join(errs...)
}
