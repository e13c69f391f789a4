package asconfig

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	upstream "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/autoscaler/config/autoscalerconfig"
	updeployment "knative.dev/serving/pkg/deployment"
)

type keyKind int

const (
	kFloat keyKind = iota
	kInt
	kDuration
	kBool
	kString
)

var configKeys = []struct {
	key  string
	kind keyKind
	good []string
}{
	{KeyContainerConcurrencyTargetPercentage, kFloat, []string{"70", "1", "0.5", "100", "0.01", "50.5"}},
	{KeyContainerConcurrencyTargetDefault, kFloat, []string{"100", "1", "0.02", "10", "1000"}},
	{KeyRequestsPerSecondTargetDefault, kFloat, []string{"200", "0.01", "1", "1e6"}},
	{KeyTargetBurstCapacity, kFloat, []string{"211", "0", "-1", "200", "1e3"}},
	{KeyStableWindow, kDuration, []string{"60s", "6s", "1h", "2m", "3599s"}},
	{KeyPanicWindowPercentage, kFloat, []string{"10", "1", "100", "55.5"}},
	{KeyPanicThresholdPercentage, kFloat, []string{"200", "110", "1000", "150"}},
	{KeyMaxScaleUpRate, kFloat, []string{"1000", "1.01", "2", "10"}},
	{KeyMaxScaleDownRate, kFloat, []string{"2", "1.5", "10"}},
	{KeyEnableScaleToZero, kBool, []string{"true", "false"}},
	{KeyScaleToZeroGracePeriod, kDuration, []string{"30s", "1ns", "1m", "6s"}},
	{KeyScaleToZeroPodRetentionPeriod, kDuration, []string{"0s", "1m", "90s", "1ms"}},
	{KeyScaleDownDelay, kDuration, []string{"0s", "15m", "1s", "1h"}},
	{KeyPodAutoscalerClass, kString, []string{KPA, HPA}},
	{KeyActivatorCapacity, kFloat, []string{"100", "1", "1000"}},
	{KeyInitialScale, kInt, []string{"1", "3", "10"}},
	{KeyAllowZeroInitialScale, kBool, []string{"false", "true"}},
	{KeyMinScale, kInt, []string{"0", "1", "5"}},
	{KeyMaxScale, kInt, []string{"0", "10", "100"}},
	{KeyMaxScaleLimit, kInt, []string{"0", "100", "1000"}},
}

var garbage = map[keyKind][]string{
	kFloat: {"0", "-0", "1", "-1", "-1.0000001", "0.5", "0.009", "0.0099999", "1.0000001", "100.0001", "101", "109.9",
		"1000.1", "1e309", "-1e309", "Inf", "+Inf", "-Inf", "infinity", "NaN", "nan", "abc", "", " 5", "5 ", "0x10",
		"1_000", "1e-3", ".5", "5.", "+2", "0.99", "99.999"},
	kInt: {"0", "1", "-1", "2147483647", "2147483648", "-2147483648", "-2147483649", "abc", "", "1.5", " 3", "+3", "07",
		"1e3", "0x5"},
	kDuration: {"0", "0s", "1s", "5s", "5.5s", "6s", "6.000001s", "1h", "1h0m1s", "3600s", "-1s", "-0s", "1ms", "1ns",
		"100ms", "61m", "abc", "", "10", "1.5s", " 6s", "999999h", "9223372036854775807ns", "1us", "1µs"},
	kBool:   {"true", "false", "True", "TRUE", "t", "F", "1", "0", "yes", "", " true"},
	kString: {"", " " + KPA + " ", "custom.example.com", "kpa", "\t"},
}

func randValue(r *rand.Rand, kind keyKind, good []string) string {
	switch n := r.IntN(10); {
	case n < 6:
		return good[r.IntN(len(good))]
	case n < 9:
		g := garbage[kind]
		return g[r.IntN(len(g))]
	default:
		switch kind {
		case kFloat:
			return strconv.FormatFloat(math.Float64frombits(r.Uint64()), 'g', -1, 64)
		case kInt:
			return strconv.FormatInt(r.Int64N(1<<34)-1<<33, 10)
		case kDuration:
			return (time.Duration(r.Int64N(int64(2*time.Hour))) - time.Minute).String()
		}
		return good[0]
	}
}

func randConfigMap(r *rand.Rand) map[string]string {
	m := map[string]string{}
	p := []float64{0.05, 0.2, 0.5}[r.IntN(3)]
	for _, k := range configKeys {
		if r.Float64() < p {
			m[k.key] = randValue(r, k.kind, k.good)
		}
	}
	return m
}

func toUpstream(c *Config) autoscalerconfig.Config {
	return autoscalerconfig.Config{
		EnableScaleToZero:                  c.EnableScaleToZero,
		ContainerConcurrencyTargetFraction: c.ContainerConcurrencyTargetFraction,
		ContainerConcurrencyTargetDefault:  c.ContainerConcurrencyTargetDefault,
		TargetUtilization:                  c.TargetUtilization,
		RPSTargetDefault:                   c.RPSTargetDefault,
		TargetBurstCapacity:                c.TargetBurstCapacity,
		ActivatorCapacity:                  c.ActivatorCapacity,
		AllowZeroInitialScale:              c.AllowZeroInitialScale,
		InitialScale:                       c.InitialScale,
		MinScale:                           c.MinScale,
		MaxScale:                           c.MaxScale,
		MaxScaleLimit:                      c.MaxScaleLimit,
		MaxScaleUpRate:                     c.MaxScaleUpRate,
		MaxScaleDownRate:                   c.MaxScaleDownRate,
		StableWindow:                       c.StableWindow,
		PanicWindowPercentage:              c.PanicWindowPercentage,
		PanicThresholdPercentage:           c.PanicThresholdPercentage,
		ScaleToZeroGracePeriod:             c.ScaleToZeroGracePeriod,
		ScaleToZeroPodRetentionPeriod:      c.ScaleToZeroPodRetentionPeriod,
		ScaleDownDelay:                     c.ScaleDownDelay,
		PodAutoscalerClass:                 c.PodAutoscalerClass,
	}
}

// hasNaN reports whether a float key of m parses as NaN: Thaw rejects those, upstream accepts them.
func hasNaN(m map[string]string) bool {
	for _, k := range configKeys {
		if v, ok := m[k.key]; ok && k.kind == kFloat {
			if f, err := strconv.ParseFloat(v, 64); err == nil && math.IsNaN(f) {
				return true
			}
		}
	}
	return false
}

// compareWithUpstream checks one map; it returns whether upstream accepted it.
func compareWithUpstream(t *testing.T, m map[string]string) bool {
	t.Helper()
	got, err := NewConfigFromMap(m)
	want, uerr := upstream.NewConfigFromMap(m)
	if err != nil {
		checkErrorNamesKey(t, m, err)
	}
	if hasNaN(m) {
		if err == nil {
			t.Fatalf("%v: NaN accepted", m)
		}
		return uerr == nil
	}
	if (err == nil) != (uerr == nil) {
		t.Fatalf("%v:\n thaw err: %v\n upstream err: %v", m, err, uerr)
	}
	if err == nil && toUpstream(got) != *want {
		t.Fatalf("%v:\n thaw     %+v\n upstream %+v", m, toUpstream(got), *want)
	}
	return uerr == nil
}

func checkErrorNamesKey(t *testing.T, m map[string]string, err error) {
	t.Helper()
	checkErrorNames(t, m, err, DefaultValues())
}

func checkErrorNames(t *testing.T, m map[string]string, err error, known map[string]string) {
	t.Helper()
	var ve *ValueError
	if !errors.As(err, &ve) {
		t.Fatalf("%v: error %v is not a *ValueError", m, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, ve.Key) || !strings.Contains(msg, "want ") || !strings.Contains(msg, strconv.Quote(ve.Value)) {
		t.Fatalf("error %q does not name key, value and allowed range", msg)
	}
	for _, k := range strings.Split(ve.Key, " and ") {
		if _, ok := known[k]; !ok {
			t.Fatalf("error names unknown key %q: %v", k, err)
		}
	}
}

func TestConfigDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	accepted, rejected := 0, 0
	for range 20000 {
		if compareWithUpstream(t, randConfigMap(r)) {
			accepted++
		} else {
			rejected++
		}
	}
	// The generator must exercise both outcomes substantially, or the test proves little.
	if accepted < 2000 || rejected < 2000 {
		t.Fatalf("accepted %d, rejected %d: generator is lopsided", accepted, rejected)
	}
}

// Every value of every key on its own, against the defaults.
func TestConfigEachKeyEachValue(t *testing.T) {
	for _, k := range configKeys {
		for _, v := range append(append([]string{}, k.good...), garbage[k.kind]...) {
			compareWithUpstream(t, map[string]string{k.key: v})
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := NewConfigFromMap(nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := upstream.NewConfigFromMap(nil)
	if toUpstream(c) != *want {
		t.Fatalf("defaults %+v, upstream %+v", *c, *want)
	}
	// The shipped ConfigMap's documented values.
	if c.TargetBurstCapacity != 211 || c.StableWindow != time.Minute || c.ContainerConcurrencyTargetFraction != 0.7 {
		t.Fatalf("defaults %+v", *c)
	}
}

func TestDefaultValuesParseToDefaults(t *testing.T) {
	c, err := NewConfigFromMap(DefaultValues())
	if err != nil || *c != *DefaultConfig() {
		t.Fatalf("DefaultValues parse to %+v, %v; want %+v", c, err, DefaultConfig())
	}
	if len(DefaultValues()) != len(configKeys) {
		t.Fatalf("DefaultValues has %d keys, the test knows %d", len(DefaultValues()), len(configKeys))
	}
}

func TestErrorMessages(t *testing.T) {
	tests := []struct {
		data map[string]string
		want []string
	}{
		{map[string]string{KeyStableWindow: "5s"}, []string{"stable-window", `"5s"`, "[6s, 1h]"}},
		{map[string]string{KeyStableWindow: "bogus"}, []string{"stable-window", `"bogus"`, "duration"}},
		{map[string]string{KeyMaxScaleUpRate: "1"}, []string{"max-scale-up-rate", `"1"`, "> 1"}},
		{map[string]string{KeyTargetBurstCapacity: "-2"}, []string{"target-burst-capacity", `"-2"`, "-1"}},
		{map[string]string{KeyMinScale: "5", KeyMaxScale: "3"}, []string{"min-scale and max-scale", "5 > 3"}},
		{map[string]string{KeyMaxScaleLimit: "10"}, []string{"max-scale", "(default)", "[1, 10]"}},
		{map[string]string{KeyPanicWindowPercentage: "NaN"}, []string{"panic-window-percentage", `"NaN"`, "not a number"}},
		{map[string]string{KeyContainerConcurrencyTargetDefault: "0.001"}, []string{"container-concurrency-target-default", "≥ 0.01"}},
	}
	for _, tc := range tests {
		_, err := NewConfigFromMap(tc.data)
		if err == nil {
			t.Fatalf("%v accepted", tc.data)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", tc.data, err, w)
			}
		}
	}
}

func TestDeploymentConfigDifferential(t *testing.T) {
	values := append([]string{"600s", "10m", "1s", "30s"}, garbage[kDuration]...)
	r := rand.New(rand.NewPCG(13, 14))
	for range 2000 {
		m := map[string]string{}
		if r.IntN(2) == 0 {
			m[KeyProgressDeadline] = values[r.IntN(len(values))]
		}
		if r.IntN(3) == 0 {
			m[legacyKeyProgressDeadline] = values[r.IntN(len(values))]
		}
		got, err := NewDeploymentConfigFromMap(m)
		up := map[string]string{"queue-sidecar-image": "queue"}
		for k, v := range m {
			up[k] = v
		}
		want, uerr := updeployment.NewConfigFromMap(up)
		if (err == nil) != (uerr == nil) {
			t.Fatalf("%v: thaw %v, upstream %v", m, err, uerr)
		}
		if err == nil && got.ProgressDeadline != want.ProgressDeadline {
			t.Fatalf("%v: thaw %v, upstream %v", m, got.ProgressDeadline, want.ProgressDeadline)
		}
		if err != nil {
			checkErrorNames(t, m, err, map[string]string{KeyProgressDeadline: "", legacyKeyProgressDeadline: ""})
		}
	}
}

func FuzzNewConfigFromMap(f *testing.F) {
	f.Add(uint8(0), "70", uint8(4), "60s", uint8(18), "3")
	f.Add(uint8(17), "5", uint8(18), "3", uint8(19), "2")
	f.Add(uint8(3), "NaN", uint8(9), "yes", uint8(13), " x ")
	f.Fuzz(func(t *testing.T, k1 uint8, v1 string, k2 uint8, v2 string, k3 uint8, v3 string) {
		m := map[string]string{}
		for _, kv := range []struct {
			k uint8
			v string
		}{{k1, v1}, {k2, v2}, {k3, v3}} {
			m[configKeys[int(kv.k)%len(configKeys)].key] = kv.v
		}
		compareWithUpstream(t, m)
	})
}

// thaw-wake-pacing is Thaw's own key: on by default, "on"/"off" in any
// case, anything else an error naming key, value and the allowed values.
func TestThawWakePacing(t *testing.T) {
	for _, c := range []struct {
		value   string
		set     bool
		want    bool
		wantErr bool
	}{
		{want: true},
		{value: "on", set: true, want: true},
		{value: " OFF ", set: true, want: false},
		{value: "off", set: true, want: false},
		{value: "true", set: true, wantErr: true},
		{value: "", set: true, wantErr: true},
	} {
		m := map[string]string{}
		if c.set {
			m[KeyThawWakePacing] = c.value
		}
		got, err := NewConfigFromMap(m)
		if c.wantErr {
			if err == nil {
				t.Errorf("%q accepted", c.value)
				continue
			}
			checkErrorNames(t, m, err, map[string]string{KeyThawWakePacing: ""})
			if !strings.Contains(err.Error(), "on or off") {
				t.Errorf("%q: error %q does not say on or off", c.value, err)
			}
			continue
		}
		if err != nil || got.WakePacing != c.want {
			t.Errorf("%q: WakePacing %v, %v; want %v", c.value, got != nil && got.WakePacing, err, c.want)
		}
	}
}
