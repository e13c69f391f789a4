// Package asconfig reads the autoscaler's configuration: the `config-autoscaler` ConfigMap (Config), the
// progress deadline of `config-deployment` (DeploymentConfig), and the per-revision
// `autoscaling.knative.dev/*` annotations of a PodAutoscaler, legacy camelCase spellings included.
//
// Keys, defaults and accepted ranges are upstream's (knative.dev/serving pkg/autoscaler/config and
// pkg/apis/autoscaling), so a ConfigMap that upstream's autoscaler accepts yields the same values here,
// and one it rejects is rejected here. One deliberate difference: a float key spelled "NaN" is rejected
// (upstream's range checks are all false for NaN, so it would let NaN into the scaling math). Every error
// names the key, the value and the allowed range.
//
// Store holds the live Config behind an atomic pointer and takes ConfigMap events from an informer, so an
// edited ConfigMap takes effect without a restart; an invalid edit keeps the last good config and logs
// one line. Watch runs such an informer for one ConfigMap.
package asconfig

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ConfigName is the name of the autoscaler's ConfigMap.
const ConfigName = "config-autoscaler"

// Classes of PodAutoscaler.
const (
	KPA = "kpa.autoscaling.knative.dev"
	HPA = "hpa.autoscaling.knative.dev"
)

// Bounds shared by the ConfigMap and the annotations.
const (
	// TargetMin is the smallest target (concurrency or RPS) that makes sense.
	TargetMin = 0.01
	// WindowMin and WindowMax bound the stable window: below the 1s bucket times the panic window's
	// minimum it is meaningless, above an hour decisions get too coarse.
	WindowMin = 6 * time.Second
	WindowMax = time.Hour

	PanicWindowPercentageMin    = 1.0
	PanicWindowPercentageMax    = 100.0
	PanicThresholdPercentageMin = 110.0
	PanicThresholdPercentageMax = 1000.0

	// DefaultTargetUtilization is the target utilization of non-concurrency metrics (a constant upstream).
	DefaultTargetUtilization = 0.7
)

// ConfigMap keys of config-autoscaler.
const (
	KeyContainerConcurrencyTargetPercentage = "container-concurrency-target-percentage"
	KeyContainerConcurrencyTargetDefault    = "container-concurrency-target-default"
	KeyRequestsPerSecondTargetDefault       = "requests-per-second-target-default"
	KeyTargetBurstCapacity                  = "target-burst-capacity"
	KeyStableWindow                         = "stable-window"
	KeyPanicWindowPercentage                = "panic-window-percentage"
	KeyPanicThresholdPercentage             = "panic-threshold-percentage"
	KeyMaxScaleUpRate                       = "max-scale-up-rate"
	KeyMaxScaleDownRate                     = "max-scale-down-rate"
	KeyEnableScaleToZero                    = "enable-scale-to-zero"
	KeyScaleToZeroGracePeriod               = "scale-to-zero-grace-period"
	KeyScaleToZeroPodRetentionPeriod        = "scale-to-zero-pod-retention-period"
	KeyScaleDownDelay                       = "scale-down-delay"
	KeyPodAutoscalerClass                   = "pod-autoscaler-class"
	KeyActivatorCapacity                    = "activator-capacity"
	KeyInitialScale                         = "initial-scale"
	KeyAllowZeroInitialScale                = "allow-zero-initial-scale"
	KeyMinScale                             = "min-scale"
	KeyMaxScale                             = "max-scale"
	KeyMaxScaleLimit                        = "max-scale-limit"

	// KeyThawWakePacing is Thaw's own: "on" (the default) paces scale-ups
	// from zero to the cluster's pod-start capacity (pkg/autoscaler/pacer), "off"
	// scales every revision from zero at once, as upstream. Upstream's
	// autoscaler ignores the key.
	KeyThawWakePacing = "thaw-wake-pacing"
)

// Config is the parsed config-autoscaler. Field names follow upstream's autoscalerconfig.Config.
type Config struct {
	EnableScaleToZero bool

	// ContainerConcurrencyTargetFraction is container-concurrency-target-percentage as a fraction in (0, 1].
	ContainerConcurrencyTargetFraction float64
	ContainerConcurrencyTargetDefault  float64
	// TargetUtilization applies to metrics other than concurrency; always DefaultTargetUtilization.
	TargetUtilization float64
	RPSTargetDefault  float64
	// TargetBurstCapacity is ≥ 0, or -1 for "activator always in the path".
	TargetBurstCapacity float64
	ActivatorCapacity   float64

	AllowZeroInitialScale bool
	InitialScale          int32
	MinScale              int32
	// MaxScale 0 means unlimited.
	MaxScale int32
	// MaxScaleLimit 0 means no limit on max-scale.
	MaxScaleLimit int32

	MaxScaleUpRate           float64
	MaxScaleDownRate         float64
	StableWindow             time.Duration
	PanicWindowPercentage    float64
	PanicThresholdPercentage float64

	ScaleToZeroGracePeriod        time.Duration
	ScaleToZeroPodRetentionPeriod time.Duration
	ScaleDownDelay                time.Duration

	PodAutoscalerClass string

	// WakePacing is thaw-wake-pacing; not one of upstream's fields.
	WakePacing bool
	// KeepAlive is thaw-keep-alive (see KeepAliveFor); not one of
	// upstream's fields. KeepAliveErr is set when the key's value was bad
	// (KeepAlive is then off).
	KeepAlive    KeepAliveMode
	KeepAliveErr error
}

// DefaultConfig is the config of an empty ConfigMap.
func DefaultConfig() *Config {
	return &Config{
		EnableScaleToZero:                  true,
		ContainerConcurrencyTargetFraction: DefaultTargetUtilization,
		ContainerConcurrencyTargetDefault:  100,
		TargetUtilization:                  DefaultTargetUtilization,
		RPSTargetDefault:                   200,
		// 211, not 200 as the docs say: knative/serving#11926.
		TargetBurstCapacity:      211,
		ActivatorCapacity:        100,
		InitialScale:             1,
		MaxScaleUpRate:           1000,
		MaxScaleDownRate:         2,
		StableWindow:             60 * time.Second,
		PanicWindowPercentage:    10,
		PanicThresholdPercentage: 200,
		ScaleToZeroGracePeriod:   30 * time.Second,
		PodAutoscalerClass:       KPA,
		WakePacing:               true,
		KeepAlive:                KeepAliveOff,
	}
}

// ValueError is an invalid value of a ConfigMap key or an annotation.
type ValueError struct {
	// Key is the offending key; for a constraint between two keys, both, joined by " and ".
	Key   string
	Value string
	// Want describes the allowed values.
	Want string
	// Err is the parse error, if the value did not parse at all.
	Err error
}

func (e *ValueError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: invalid value %q (%v): want %s", e.Key, e.Value, e.Err, e.Want)
	}
	return fmt.Sprintf("%s: invalid value %q: want %s", e.Key, e.Value, e.Want)
}

func (e *ValueError) Unwrap() error { return e.Err }

// parser collects the first error while reading keys, so the reading code stays linear.
type parser struct {
	data map[string]string
	err  error
}

func (p *parser) fail(key, want string, err error) {
	if p.err == nil {
		p.err = &ValueError{Key: key, Value: p.data[key], Want: want, Err: unwrapNum(err)}
	}
}

// unwrapNum drops strconv's "strconv.ParseFloat: parsing "x":" prefix, which repeats the value.
func unwrapNum(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}

func (p *parser) float(key string, dst *float64, want string) {
	s, ok := p.data[key]
	if !ok {
		return
	}
	f, err := strconv.ParseFloat(s, 64)
	if err == nil && math.IsNaN(f) {
		err = errors.New("not a number")
	}
	if err != nil {
		p.fail(key, want, err)
		return
	}
	*dst = f
}

func (p *parser) int32(key string, dst *int32, want string) {
	s, ok := p.data[key]
	if !ok {
		return
	}
	i, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		p.fail(key, want, err)
		return
	}
	*dst = int32(i)
}

func (p *parser) duration(key string, dst *time.Duration, want string) {
	s, ok := p.data[key]
	if !ok {
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.fail(key, want, err)
		return
	}
	*dst = d
}

func (p *parser) bool(key string, dst *bool) {
	s, ok := p.data[key]
	if !ok {
		return
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		p.fail(key, "true or false", unwrapNum(err))
		return
	}
	*dst = b
}

// onOff reads "on" or "off" (any case, spaces around ignored).
func (p *parser) onOff(key string, dst *bool) {
	s, ok := p.data[key]
	if !ok {
		return
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on":
		*dst = true
	case "off":
		*dst = false
	default:
		p.fail(key, wantOnOff, nil)
	}
}

// Allowed values, as told in errors.
const (
	wantCCPercentage   = "a percentage in (1, 100] or a fraction in (0, 1]"
	wantPositiveNumber = "a number"
	wantTarget         = "a number ≥ 0.01"
	wantTBC            = "a number ≥ 0, or -1 (activator always in the path)"
	wantStableWindow   = "a duration in [6s, 1h] in whole seconds"
	wantPanicWindowPct = "a number in [1, 100]"
	wantRate           = "a number > 1"
	wantGrace          = "a duration > 0"
	wantNonNegDuration = "a duration ≥ 0"
	wantScaleDownDelay = "a duration ≥ 0 in whole seconds"
	wantActivatorCap   = "a number ≥ 1"
	wantInitialScale   = "an integer ≥ 1, or ≥ 0 with allow-zero-initial-scale: true"
	wantNonNegInt      = "an integer in [0, 2147483647]"
	wantOnOff          = "on or off"
)

// NewConfigFromMap parses the data of config-autoscaler; missing keys take their defaults.
func NewConfigFromMap(data map[string]string) (*Config, error) {
	c := DefaultConfig()
	p := parser{data: data}

	if s, ok := data[KeyPodAutoscalerClass]; ok {
		c.PodAutoscalerClass = strings.TrimSpace(s)
	}
	p.bool(KeyEnableScaleToZero, &c.EnableScaleToZero)
	p.bool(KeyAllowZeroInitialScale, &c.AllowZeroInitialScale)
	p.onOff(KeyThawWakePacing, &c.WakePacing)
	c.keepAliveKey(data)

	p.float(KeyMaxScaleUpRate, &c.MaxScaleUpRate, wantRate)
	p.float(KeyMaxScaleDownRate, &c.MaxScaleDownRate, wantRate)
	p.float(KeyContainerConcurrencyTargetPercentage, &c.ContainerConcurrencyTargetFraction, wantCCPercentage)
	p.float(KeyContainerConcurrencyTargetDefault, &c.ContainerConcurrencyTargetDefault, wantPositiveNumber)
	p.float(KeyRequestsPerSecondTargetDefault, &c.RPSTargetDefault, wantTarget)
	p.float(KeyTargetBurstCapacity, &c.TargetBurstCapacity, wantTBC)
	p.float(KeyPanicWindowPercentage, &c.PanicWindowPercentage, wantPanicWindowPct)
	p.float(KeyActivatorCapacity, &c.ActivatorCapacity, wantActivatorCap)
	// Upstream does not range-check the threshold in the ConfigMap (only in annotations); neither do we.
	p.float(KeyPanicThresholdPercentage, &c.PanicThresholdPercentage, wantPositiveNumber)

	p.int32(KeyInitialScale, &c.InitialScale, wantInitialScale)
	p.int32(KeyMinScale, &c.MinScale, wantNonNegInt)
	p.int32(KeyMaxScale, &c.MaxScale, wantNonNegInt)
	p.int32(KeyMaxScaleLimit, &c.MaxScaleLimit, wantNonNegInt)

	p.duration(KeyStableWindow, &c.StableWindow, wantStableWindow)
	p.duration(KeyScaleDownDelay, &c.ScaleDownDelay, wantScaleDownDelay)
	p.duration(KeyScaleToZeroGracePeriod, &c.ScaleToZeroGracePeriod, wantGrace)
	p.duration(KeyScaleToZeroPodRetentionPeriod, &c.ScaleToZeroPodRetentionPeriod, wantNonNegDuration)
	if p.err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigName, p.err)
	}

	// Legacy: values in (0, 1] are fractions already; anything above 1 is a percentage.
	if c.ContainerConcurrencyTargetFraction > 1 {
		c.ContainerConcurrencyTargetFraction /= 100
	}
	if err := c.validate(data); err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigName, err)
	}
	return c, nil
}

// NewConfigFromConfigMap parses config-autoscaler.
func NewConfigFromConfigMap(cm *corev1.ConfigMap) (*Config, error) {
	return NewConfigFromMap(cm.Data)
}

func (c *Config) validate(data map[string]string) error {
	bad := func(key, want string) error {
		v, ok := data[key]
		if !ok {
			v = "(default)"
		}
		return &ValueError{Key: key, Value: v, Want: want}
	}
	switch {
	case c.ScaleToZeroGracePeriod <= 0:
		return bad(KeyScaleToZeroGracePeriod, wantGrace)
	case c.ScaleDownDelay < 0 || c.ScaleDownDelay.Round(time.Second) != c.ScaleDownDelay:
		return bad(KeyScaleDownDelay, wantScaleDownDelay)
	case c.ScaleToZeroPodRetentionPeriod < 0:
		return bad(KeyScaleToZeroPodRetentionPeriod, wantNonNegDuration)
	case c.TargetBurstCapacity < 0 && c.TargetBurstCapacity != -1:
		return bad(KeyTargetBurstCapacity, wantTBC)
	case c.ContainerConcurrencyTargetFraction <= 0 || c.ContainerConcurrencyTargetFraction > 1:
		return bad(KeyContainerConcurrencyTargetPercentage, wantCCPercentage)
	case c.ContainerConcurrencyTargetFraction*c.ContainerConcurrencyTargetDefault < TargetMin:
		return &ValueError{
			Key: KeyContainerConcurrencyTargetPercentage + " and " + KeyContainerConcurrencyTargetDefault,
			Value: fmt.Sprintf("%v × %v = %v", c.ContainerConcurrencyTargetFraction, c.ContainerConcurrencyTargetDefault,
				c.ContainerConcurrencyTargetFraction*c.ContainerConcurrencyTargetDefault),
			Want: "a target concurrency (fraction × default) ≥ 0.01",
		}
	case c.RPSTargetDefault < TargetMin:
		return bad(KeyRequestsPerSecondTargetDefault, wantTarget)
	case c.ActivatorCapacity < 1:
		return bad(KeyActivatorCapacity, wantActivatorCap)
	case c.MaxScaleUpRate <= 1:
		return bad(KeyMaxScaleUpRate, wantRate)
	case c.MaxScaleDownRate <= 1:
		return bad(KeyMaxScaleDownRate, wantRate)
	case c.StableWindow < WindowMin || c.StableWindow > WindowMax || c.StableWindow.Round(time.Second) != c.StableWindow:
		return bad(KeyStableWindow, wantStableWindow)
	case c.PanicWindowPercentage < PanicWindowPercentageMin || c.PanicWindowPercentage > PanicWindowPercentageMax:
		return bad(KeyPanicWindowPercentage, wantPanicWindowPct)
	case c.InitialScale < 0 || (c.InitialScale == 0 && !c.AllowZeroInitialScale):
		return bad(KeyInitialScale, wantInitialScale)
	case c.MinScale < 0:
		return bad(KeyMinScale, wantNonNegInt)
	case c.MaxScaleLimit < 0:
		return bad(KeyMaxScaleLimit, wantNonNegInt)
	case c.MaxScaleLimit > 0 && (c.MaxScale < 1 || c.MaxScale > c.MaxScaleLimit):
		// With a limit set, "unlimited" (0) is not allowed either.
		return bad(KeyMaxScale, fmt.Sprintf("an integer in [1, %d] (max-scale-limit)", c.MaxScaleLimit))
	case c.MaxScale < 0:
		return bad(KeyMaxScale, wantNonNegInt)
	case c.MaxScale > 0 && c.MinScale > c.MaxScale:
		return &ValueError{
			Key:   KeyMinScale + " and " + KeyMaxScale,
			Value: fmt.Sprintf("%d > %d", c.MinScale, c.MaxScale),
			Want:  "min-scale ≤ max-scale (or max-scale 0, unlimited)",
		}
	}
	return nil
}

// DefaultValues is config-autoscaler's keys with their default values, as the shipped ConfigMap spells
// them (useful for docs, and to tell a misspelt key).
func DefaultValues() map[string]string {
	return map[string]string{
		KeyContainerConcurrencyTargetPercentage: "70",
		KeyContainerConcurrencyTargetDefault:    "100",
		KeyRequestsPerSecondTargetDefault:       "200",
		KeyTargetBurstCapacity:                  "211",
		KeyStableWindow:                         "60s",
		KeyPanicWindowPercentage:                "10.0",
		KeyPanicThresholdPercentage:             "200.0",
		KeyMaxScaleUpRate:                       "1000.0",
		KeyMaxScaleDownRate:                     "2.0",
		KeyEnableScaleToZero:                    "true",
		KeyScaleToZeroGracePeriod:               "30s",
		KeyScaleToZeroPodRetentionPeriod:        "0s",
		KeyScaleDownDelay:                       "0s",
		KeyPodAutoscalerClass:                   KPA,
		KeyActivatorCapacity:                    "100.0",
		KeyInitialScale:                         "1",
		KeyAllowZeroInitialScale:                "false",
		KeyMinScale:                             "0",
		KeyMaxScale:                             "0",
		KeyMaxScaleLimit:                        "0",
	}
}
