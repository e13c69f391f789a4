package asconfig

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	upautoscaling "knative.dev/serving/pkg/apis/autoscaling"
	"knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/autoscaler/config/autoscalerconfig"
)

var annotationKeys = []struct {
	keys []string // kebab-case first, then legacy
	kind keyKind
	good []string
}{
	{[]string{ClassAnnotationKey}, kString, []string{KPA, HPA, "custom.example.com"}},
	{[]string{MetricAnnotationKey}, kString, []string{MetricConcurrency, MetricRPS, MetricCPU, MetricMemory}},
	{[]string{TargetAnnotationKey}, kFloat, []string{"10", "0.01", "100", "1.5"}},
	{[]string{TargetUtilizationPercentageKey, legacyTargetUtilizationPercentageKey}, kFloat, []string{"70", "1", "100", "50.5"}},
	{[]string{TargetBurstCapacityKey, legacyTargetBurstCapacityKey}, kFloat, []string{"0", "-1", "200", "211"}},
	{[]string{MinScaleAnnotationKey, legacyMinScaleKey}, kInt, []string{"0", "1", "3"}},
	{[]string{MaxScaleAnnotationKey, legacyMaxScaleKey}, kInt, []string{"0", "5", "10", "100"}},
	{[]string{InitialScaleAnnotationKey, legacyInitialScaleKey}, kInt, []string{"0", "1", "4"}},
	{[]string{ActivationScaleKey}, kInt, []string{"2", "3", "5"}},
	{[]string{ScaleDownDelayAnnotationKey, legacyScaleDownDelayKey}, kDuration, []string{"0s", "15m", "1h", "30s"}},
	{[]string{ScaleToZeroPodRetentionPeriodKey, legacyScaleToZeroPodRetentionPeriodKey}, kDuration, []string{"0s", "1m", "1h"}},
	{[]string{WindowAnnotationKey}, kDuration, []string{"6s", "60s", "1h", "2m"}},
	{[]string{PanicWindowPercentageAnnotationKey, legacyPanicWindowPercentageKey}, kFloat, []string{"10", "1", "100"}},
	{[]string{PanicThresholdPercentageAnnotationKey, legacyPanicThresholdPercentageKey}, kFloat, []string{"200", "110", "1000"}},
	{[]string{MetricAggregationAlgorithmKey, legacyMetricAggregationAlgorithmKey}, kString, []string{AggregationLinear, AggregationWeightedExponential, "weightedExponential", ""}},
	{[]string{ProgressDeadlineAnnotationKey}, kDuration, []string{"600s", "10m", "1s"}},
}

func randAnnotations(r *rand.Rand) map[string]string {
	m := map[string]string{}
	p := []float64{0.1, 0.3}[r.IntN(2)]
	for _, k := range annotationKeys {
		for _, key := range k.keys {
			if r.Float64() < p {
				m[key] = randValue(r, k.kind, k.good)
			}
		}
	}
	return m
}

func annotationHasNaN(m map[string]string) bool {
	for _, k := range annotationKeys {
		if k.kind != kFloat {
			continue
		}
		// Only the key that is read counts: a legacy key shadowed by the kebab-case one is ignored.
		if _, v, ok := lookup(m, k.keys...); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil && math.IsNaN(f) {
				return true
			}
		}
	}
	return false
}

func sameFloat(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

// compareGetters checks that ok and the value agree with upstream's PodAutoscaler getters.
func compareGetters(t *testing.T, m map[string]string) {
	t.Helper()
	pa := &v1alpha1.PodAutoscaler{ObjectMeta: metav1.ObjectMeta{Annotations: m}}
	floats := []struct {
		name     string
		thaw     func(map[string]string) (float64, bool, error)
		upstream func() (float64, bool)
	}{
		{"Target", Target, pa.Target},
		{"TargetUtilization", TargetUtilization, pa.TargetUtilization},
		{"TargetBurstCapacity", TargetBurstCapacity, pa.TargetBC},
		{"PanicWindowPercentage", PanicWindowPercentage, pa.PanicWindowPercentage},
		{"PanicThresholdPercentage", PanicThresholdPercentage, pa.PanicThresholdPercentage},
	}
	for _, g := range floats {
		v, ok, _ := g.thaw(m)
		uv, uok := g.upstream()
		if ok != uok || (ok && !sameFloat(v, uv)) {
			t.Fatalf("%s(%v) = %v, %v; upstream %v, %v", g.name, m, v, ok, uv, uok)
		}
	}
	durations := []struct {
		name     string
		thaw     func(map[string]string) (time.Duration, bool, error)
		upstream func() (time.Duration, bool)
	}{
		{"Window", Window, pa.Window},
		{"ScaleDownDelay", ScaleDownDelay, pa.ScaleDownDelay},
		{"ScaleToZeroPodRetention", ScaleToZeroPodRetention, pa.ScaleToZeroPodRetention},
		{"ProgressDeadline", ProgressDeadline, pa.ProgressDeadline},
	}
	for _, g := range durations {
		v, ok, _ := g.thaw(m)
		uv, uok := g.upstream()
		if ok != uok || (ok && v != uv) {
			t.Fatalf("%s(%v) = %v, %v; upstream %v, %v", g.name, m, v, ok, uv, uok)
		}
	}
	ints := []struct {
		name     string
		thaw     func(map[string]string) (int32, bool, error)
		upstream func() (int32, bool)
	}{
		{"ActivationScale", ActivationScale, pa.ActivationScale},
		{"InitialScale", func(m map[string]string) (int32, bool, error) { return InitialScale(m, true) }, pa.InitialScale},
	}
	for _, g := range ints {
		v, ok, _ := g.thaw(m)
		uv, uok := g.upstream()
		if ok != uok || (ok && v != uv) {
			t.Fatalf("%s(%v) = %v, %v; upstream %v, %v", g.name, m, v, ok, uv, uok)
		}
	}
	// Scale bounds: upstream falls back to the config where the annotation is absent or unparsable.
	cfg := &Config{MinScale: 2, MaxScale: 7}
	umin, umax := pa.ScaleBounds(toUpstreamPtr(cfg))
	min, ok, _ := MinScale(m)
	if !ok {
		min = cfg.MinScale
	}
	max, ok, _ := MaxScale(m)
	if !ok {
		max = cfg.MaxScale
	}
	if min != umin || max != umax {
		t.Fatalf("scale bounds of %v: %d, %d; upstream %d, %d", m, min, max, umin, umax)
	}
	if c, ok, _ := Class(m); (ok && c != pa.Class()) || (!ok && pa.Class() != KPA) {
		t.Fatalf("Class(%v) = %q, %v; upstream %q", m, c, ok, pa.Class())
	}
	if v, ok, _ := Metric(m, KPA); ok && v != pa.Metric() {
		t.Fatalf("Metric(%v) = %q; upstream %q", m, v, pa.Metric())
	}
	metric := &v1alpha1.Metric{ObjectMeta: metav1.ObjectMeta{Annotations: m}}
	if v, _, _ := MetricAggregationAlgorithm(m); v != metric.AggregationAlgorithm() {
		t.Fatalf("MetricAggregationAlgorithm(%v) = %q; upstream %q", m, v, metric.AggregationAlgorithm())
	}
}

func toUpstreamPtr(c *Config) *autoscalerconfig.Config {
	u := toUpstream(c)
	return &u
}

func randASConfig(r *rand.Rand) *Config {
	c := DefaultConfig()
	c.MaxScaleLimit = []int32{0, 0, 10, 100}[r.IntN(4)]
	c.AllowZeroInitialScale = r.IntN(2) == 0
	c.PodAutoscalerClass = []string{KPA, KPA, HPA, "custom.example.com"}[r.IntN(4)]
	return c
}

func compareValidation(t *testing.T, cfg *Config, m map[string]string) bool {
	t.Helper()
	err := ValidateAnnotations(cfg, m)
	uerr := upautoscaling.ValidateAnnotations(context.Background(), toUpstreamPtr(cfg), m)
	if annotationHasNaN(m) {
		if err == nil {
			t.Fatalf("%v: NaN accepted", m)
		}
		return uerr == nil
	}
	if (err == nil) != (uerr == nil) {
		t.Fatalf("ValidateAnnotations(%+v, %v):\n thaw %v\n upstream %v", *cfg, m, err, uerr)
	}
	return uerr == nil
}

func TestAnnotationsDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	accepted, rejected := 0, 0
	for range 20000 {
		m := randAnnotations(r)
		compareGetters(t, m)
		if compareValidation(t, randASConfig(r), m) {
			accepted++
		} else {
			rejected++
		}
	}
	if accepted < 2000 || rejected < 2000 {
		t.Fatalf("accepted %d, rejected %d: generator is lopsided", accepted, rejected)
	}
}

func TestAnnotationsEachKeyEachValue(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for _, k := range annotationKeys {
		for _, key := range k.keys {
			for _, v := range append(append([]string{}, k.good...), garbage[k.kind]...) {
				m := map[string]string{key: v}
				compareGetters(t, m)
				for range 4 {
					compareValidation(t, randASConfig(r), m)
				}
			}
		}
	}
}

func TestLegacyAliases(t *testing.T) {
	tests := []struct {
		name string
		get  func(map[string]string) (float64, bool, error)
		new  string
		old  string
	}{
		{"target-utilization", TargetUtilization, TargetUtilizationPercentageKey, legacyTargetUtilizationPercentageKey},
		{"target-burst-capacity", TargetBurstCapacity, TargetBurstCapacityKey, legacyTargetBurstCapacityKey},
		{"panic-window", PanicWindowPercentage, PanicWindowPercentageAnnotationKey, legacyPanicWindowPercentageKey},
		{"panic-threshold", PanicThresholdPercentage, PanicThresholdPercentageAnnotationKey, legacyPanicThresholdPercentageKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			only, ok, err := tc.get(map[string]string{tc.old: "150"})
			if !ok || only == 0 {
				t.Fatalf("legacy key alone: %v, %v, %v", only, ok, err)
			}
			both, _, _ := tc.get(map[string]string{tc.old: "150", tc.new: "100"})
			if both == only {
				t.Fatalf("the kebab-case key must win over the legacy one")
			}
		})
	}
	if v, ok, err := MinScale(map[string]string{legacyMinScaleKey: "3"}); v != 3 || !ok || err != nil {
		t.Fatalf("minScale: %v %v %v", v, ok, err)
	}
	if v, _, _ := MetricAggregationAlgorithm(map[string]string{legacyMetricAggregationAlgorithmKey: "weightedExponential"}); v != AggregationWeightedExponential {
		t.Fatalf("weightedExponential normalised to %q", v)
	}
}

func TestAnnotationErrorsNameKeyValueRange(t *testing.T) {
	tests := []struct {
		ann  map[string]string
		want []string
	}{
		{map[string]string{WindowAnnotationKey: "5s"}, []string{WindowAnnotationKey, `"5s"`, "[6s, 1h]"}},
		{map[string]string{legacyMinScaleKey: "-1"}, []string{legacyMinScaleKey, `"-1"`, "[0, 2147483647]"}},
		{map[string]string{ActivationScaleKey: "1"}, []string{ActivationScaleKey, `"1"`, "≥ 2"}},
		{map[string]string{PanicThresholdPercentageAnnotationKey: "100"}, []string{PanicThresholdPercentageAnnotationKey, "[110, 1000]"}},
		{map[string]string{MinScaleAnnotationKey: "5", MaxScaleAnnotationKey: "2"}, []string{"min-scale", "max-scale", "5 > 2"}},
		{map[string]string{MaxScaleAnnotationKey: "50"}, []string{MaxScaleAnnotationKey, `"50"`, "[1, 10]"}},
		{map[string]string{ProgressDeadlineAnnotationKey: "1.5s"}, []string{ProgressDeadlineAnnotationKey, "whole seconds"}},
	}
	cfg := DefaultConfig()
	cfg.MaxScaleLimit = 10
	for _, tc := range tests {
		err := ValidateAnnotations(cfg, tc.ann)
		if tc.ann[ProgressDeadlineAnnotationKey] != "" {
			_, _, err = ProgressDeadline(tc.ann)
		}
		if err == nil {
			t.Fatalf("%v accepted", tc.ann)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", tc.ann, err, w)
			}
		}
	}
}

func FuzzValidateAnnotations(f *testing.F) {
	f.Add(uint8(5), "3", uint8(6), "2", uint8(8), "1")
	f.Fuzz(func(t *testing.T, k1 uint8, v1 string, k2 uint8, v2 string, k3 uint8, v3 string) {
		m := map[string]string{}
		for _, kv := range []struct {
			k uint8
			v string
		}{{k1, v1}, {k2, v2}, {k3, v3}} {
			a := annotationKeys[int(kv.k)%len(annotationKeys)]
			m[a.keys[int(kv.k/16)%len(a.keys)]] = kv.v
		}
		compareGetters(t, m)
		for _, c := range []*Config{DefaultConfig(), {MaxScaleLimit: 10, AllowZeroInitialScale: true, PodAutoscalerClass: HPA}} {
			compareValidation(t, c, m)
		}
	})
}
