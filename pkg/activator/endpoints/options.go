// Package endpoints learns which pods of a revision can take traffic. It watches the revisions' private
// and public core/v1 Endpoints through label selectors, probes new pods' queue-proxies and feeds the
// results to a BackendSink (the throttler). It never touches requests.
package endpoints

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

// BackendSink receives the routable destinations of revisions. Calls for one revision are never
// concurrent and arrive in order; calls for different revisions may be concurrent.
type BackendSink interface {
	UpdateBackends(rev types.NamespacedName, b throttler.Backends)
	UpdateActivators(rev types.NamespacedName, activatorIPs []string)
}

// MeshMode is config-network's mesh-compatibility-mode.
type MeshMode string

const (
	// MeshAuto probes pods and falls back to the private ClusterIP when only mesh-like errors are seen.
	MeshAuto MeshMode = "auto"
	// MeshEnabled never probes pods: traffic always goes through the private ClusterIP.
	MeshEnabled MeshMode = "enabled"
	// MeshDisabled trusts Kubernetes-ready addresses without probing and never uses the ClusterIP.
	MeshDisabled MeshMode = "disabled"
)

// ParseMeshMode parses a mesh-compatibility-mode value; empty means auto.
func ParseMeshMode(s string) (MeshMode, error) {
	switch m := MeshMode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return MeshAuto, nil
	case MeshAuto, MeshEnabled, MeshDisabled:
		return m, nil
	}
	return "", fmt.Errorf("invalid mesh-compatibility-mode %q: want auto, enabled or disabled", s)
}

// Upstream's defaults (env PROBE_TIMEOUT and PROBE_FREQUENCY).
const (
	DefaultProbeTimeout    = 300 * time.Millisecond
	DefaultProbeFrequency  = 200 * time.Millisecond
	DefaultMaxProbeTimeout = 5 * time.Second
	// While a revision has no pod that passed a probe (a cold start), its new pods are re-probed
	// this often, for at most DefaultColdProbeWindow: the first byte of a cold start should not wait
	// up to a whole ProbeFrequency after queue-proxy comes up. A pod not yet listening refuses at
	// once, so the extra probes are cheap; the window bounds them for pods that never come up.
	DefaultColdProbeFrequency = 25 * time.Millisecond
	DefaultColdProbeWindow    = 10 * time.Second
)

// Options configure a Manager. Zero values take the defaults.
type Options struct {
	// ProbeTimeout is the first timeout of each probe (PROBE_TIMEOUT).
	ProbeTimeout time.Duration
	// MaxProbeTimeout caps the timeout, which doubles after each probe that timed out, so that
	// high-latency networks still get a pod routed (knative/serving#14202).
	MaxProbeTimeout time.Duration
	// ProbeFrequency is the re-probe period while some address is not yet healthy (PROBE_FREQUENCY).
	ProbeFrequency time.Duration
	// ColdProbeFrequency is the re-probe period while the revision has no healthy pod, for at most
	// ColdProbeWindow; a value at or above ProbeFrequency turns the fast period off.
	ColdProbeFrequency time.Duration
	ColdProbeWindow    time.Duration
	// MeshMode is config-network's mesh-compatibility-mode.
	MeshMode MeshMode
	// PassthroughLB (config-network enable-mesh-pod-addressability) makes probes carry
	// K-Passthrough-Lb and the private service Host; there is then no ClusterIP fallback.
	PassthroughLB bool
	// Transport is used for probes; share it with the proxy so a probe's connection carries the first
	// request. Default: a new http.Transport.
	Transport http.RoundTripper
	// Resync of the informers; 0 disables it.
	Resync time.Duration
	Clock  clock.WithTickerAndDelayedExecution
	Logger *zap.SugaredLogger
}

func (o Options) withDefaults() Options {
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.MaxProbeTimeout < o.ProbeTimeout {
		o.MaxProbeTimeout = max(DefaultMaxProbeTimeout, o.ProbeTimeout)
	}
	if o.ProbeFrequency <= 0 {
		o.ProbeFrequency = DefaultProbeFrequency
	}
	if o.ColdProbeFrequency <= 0 {
		o.ColdProbeFrequency = DefaultColdProbeFrequency
	}
	if o.ColdProbeWindow <= 0 {
		o.ColdProbeWindow = DefaultColdProbeWindow
	}
	if o.MeshMode == "" {
		o.MeshMode = MeshAuto
	}
	if o.Transport == nil {
		o.Transport = &http.Transport{}
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop().Sugar()
	}
	return o
}

// ProbeSettingsFromEnv reads PROBE_TIMEOUT and PROBE_FREQUENCY (Go durations) with upstream's defaults.
func ProbeSettingsFromEnv(getenv func(string) string) (timeout, frequency time.Duration, err error) {
	timeout, frequency = DefaultProbeTimeout, DefaultProbeFrequency
	for _, e := range []struct {
		name string
		dst  *time.Duration
	}{{"PROBE_TIMEOUT", &timeout}, {"PROBE_FREQUENCY", &frequency}} {
		v := getenv(e.name)
		if v == "" {
			continue
		}
		d, perr := time.ParseDuration(v)
		if perr != nil || d <= 0 {
			return 0, 0, fmt.Errorf("invalid %s %q: want a positive duration like 300ms", e.name, v)
		}
		*e.dst = d
	}
	return timeout, frequency, nil
}
