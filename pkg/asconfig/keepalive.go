package asconfig

import (
	"strconv"
	"strings"
)

// Thaw's learned keep-alive / pre-warm policy (pkg/autoscaler/keepalive, applied by
// pkg/autoscaler/kpa) is off unless asked for. It is asked for cluster-wide by the
// config-autoscaler key KeyThawKeepAlive, or per revision by the annotation
// KeepAliveAnnotationKey on the Revision (copied to its PodAutoscaler), which
// wins over the key. Upstream's autoscaler ignores both: the key is not one
// of its keys, and the annotation is outside the autoscaling.knative.dev
// domain, which upstream's webhook validates and its revision reconciler
// prunes from PodAutoscalers.
const (
	// KeyThawKeepAlive is the config-autoscaler key: off (the default),
	// learned or hybrid.
	KeyThawKeepAlive = "thaw-keep-alive"

	thawAnnotationPrefix = "autoscaling.thaw.dev/"

	// KeepAliveAnnotationKey turns the policy on or off for one revision:
	// off, learned or hybrid.
	KeepAliveAnnotationKey = thawAnnotationPrefix + "keep-alive"
	// KeepAliveWindowsAnnotationKey is written by the autoscaler on the
	// PodAutoscaler: the windows the policy learned, as JSON (see
	// kpa.KeepAliveWindows).
	KeepAliveWindowsAnnotationKey = thawAnnotationPrefix + "keep-alive-windows"
	// KeepAliveTimeScaleAnnotationKey, for trace replays whose time runs
	// N times faster than the trace's (thaw replay --speed N), shrinks the
	// policy's time constants by N (keepalive.Config.TimeScaled): an
	// integer ≥ 1 dividing 60. Default 1.
	KeepAliveTimeScaleAnnotationKey = thawAnnotationPrefix + "keep-alive-time-scale"
	// KeepAliveStateAnnotationKey is written by the autoscaler on the
	// PodAutoscaler: the policy's bounded state (keepalive.State as JSON),
	// read back when an autoscaler replica takes the revision over.
	KeepAliveStateAnnotationKey = thawAnnotationPrefix + "keep-alive-state"
)

// KeepAliveMode is a value of the key or the annotation.
type KeepAliveMode string

// Keep-alive modes. The names are those of `thaw replay --simulate`'s
// policies.
const (
	// KeepAliveOff is upstream's behaviour: the last pod goes after the
	// stable window, the grace period and the pod retention period.
	KeepAliveOff KeepAliveMode = "off"
	// KeepAliveLearned is Thaw's policy: the idle-time histogram with
	// windows chosen by cost (keepalive.DefaultConfig).
	KeepAliveLearned KeepAliveMode = "learned"
	// KeepAliveHybrid is the paper's hybrid histogram policy
	// (keepalive.PaperConfig).
	KeepAliveHybrid KeepAliveMode = "hybrid"
)

const wantKeepAlive = "off, learned or hybrid"

// parseKeepAlive reads a mode (any case, spaces around ignored).
func parseKeepAlive(s string) (KeepAliveMode, bool) {
	switch m := KeepAliveMode(strings.ToLower(strings.TrimSpace(s))); m {
	case KeepAliveOff, KeepAliveLearned, KeepAliveHybrid:
		return m, true
	}
	return KeepAliveOff, false
}

// keepAliveKey reads KeyThawKeepAlive into c. A bad value does not reject the
// ConfigMap (upstream accepts it, so its own keys must apply as upstream's):
// the policy stays off and KeepAliveErr says why.
func (c *Config) keepAliveKey(data map[string]string) {
	s, ok := data[KeyThawKeepAlive]
	if !ok {
		return
	}
	m, ok := parseKeepAlive(s)
	if !ok {
		c.KeepAliveErr = &ValueError{Key: KeyThawKeepAlive, Value: s, Want: wantKeepAlive + " (the policy is off)"}
	}
	c.KeepAlive = m
}

// KeepAlive is the keep-alive annotation. ok is false when it is absent;
// err is set (and the mode off) when its value is not one of the modes.
func KeepAlive(ann map[string]string) (KeepAliveMode, bool, error) {
	s, present := ann[KeepAliveAnnotationKey]
	if !present {
		return KeepAliveOff, false, nil
	}
	m, ok := parseKeepAlive(s)
	if !ok {
		return KeepAliveOff, true, annErr(KeepAliveAnnotationKey, s, wantKeepAlive+" (the policy is off for this revision)", nil)
	}
	return m, true, nil
}

// KeepAliveFor is the mode of a revision with annotations ann under c: the
// annotation when present, else the ConfigMap's key. A bad annotation turns
// the policy off for the revision (err says why); a bad key turns it off
// for revisions without the annotation (c.KeepAliveErr).
func (c *Config) KeepAliveFor(ann map[string]string) (KeepAliveMode, error) {
	m, ok, err := KeepAlive(ann)
	if ok || err != nil {
		return m, err
	}
	if c.KeepAlive == "" {
		return KeepAliveOff, nil
	}
	return c.KeepAlive, nil
}

const wantTimeScale = "an integer ≥ 1 dividing 60 (the policy is off for this revision)"

// KeepAliveTimeScale is the keep-alive time-scale annotation: 1 when absent;
// an error (and 1) when it is not an integer dividing 60.
func KeepAliveTimeScale(ann map[string]string) (int, error) {
	s, ok := ann[KeepAliveTimeScaleAnnotationKey]
	if !ok {
		return 1, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || 60%n != 0 {
		return 1, annErr(KeepAliveTimeScaleAnnotationKey, s, wantTimeScale, err)
	}
	return n, nil
}
