package lifecycle

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	pkglogging "knative.dev/pkg/logging"

	"github.com/thaw-dev/thaw/pkg/autoscaler/scraper"
	"github.com/thaw-dev/thaw/pkg/cmwatch"
	"github.com/thaw-dev/thaw/pkg/observability"
)

// Names of the ConfigMaps read besides config-autoscaler and
// config-deployment (which asconfig names).
const (
	networkConfigName = "config-network"
)

// netConfig is the part of config-network the scraper uses.
type netConfig struct {
	// MeshMode is mesh-compatibility-mode: auto, enabled or disabled.
	MeshMode string
	// Passthrough is enable-mesh-pod-addressability.
	Passthrough bool
}

// newNetConfigFromMap parses config-network; unknown keys are ignored (the
// ConfigMap is shared with the networking layer).
func newNetConfigFromMap(data map[string]string) (*netConfig, error) {
	c := &netConfig{MeshMode: scraper.MeshAuto}
	if v, ok := data["mesh-compatibility-mode"]; ok {
		switch m := strings.ToLower(strings.TrimSpace(v)); m {
		case scraper.MeshAuto, scraper.MeshEnabled, scraper.MeshDisabled:
			c.MeshMode = m
		default:
			return nil, fmt.Errorf("mesh-compatibility-mode: %q is not auto, enabled or disabled", v)
		}
	}
	if v, ok := data["enable-mesh-pod-addressability"]; ok {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("enable-mesh-pod-addressability: %w", err)
		}
		c.Passthrough = b
	}
	return c, nil
}

// loggingHandler applies config-logging's level for the autoscaler live; a
// deleted ConfigMap leaves the level as it is.
func loggingHandler(name string, logger *zap.SugaredLogger, level zap.AtomicLevel) cmwatch.Funcs {
	update := pkglogging.UpdateLevelFromConfigMap(logger, level, Component)
	return cmwatch.Funcs{
		ConfigMap: name,
		Update:    func(cm *corev1.ConfigMap) error { update(cm); return nil },
	}
}

// observabilityHandler applies config-observability: runtime-profiling
// toggles pprof on the profiling port, metrics-protocol grpc or
// http/protobuf starts (or moves, or stops) the OTLP metrics export.
// Prometheus is always served on the metrics port, whatever metrics-protocol
// says.
func observabilityHandler(name string, prof *observability.Profiling, exp *observability.MetricsExporter, logger *zap.SugaredLogger) cmwatch.Funcs {
	apply := func(c *observability.Config) {
		prof.SetEnabled(c.RuntimeProfiling)
		// A collector gone away must not hold up the watch for long.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		changed, err := exp.Apply(ctx, c)
		if err != nil {
			logger.Errorw("OTLP metrics export is off", zap.Error(err))
		}
		logger.Infow("config-observability applied; Prometheus stays on the metrics port",
			"metrics-protocol", c.MetricsProtocol, "metrics-endpoint", c.MetricsEndpoint,
			"otlp", exp.Active(), "otlpChanged", changed, "runtime-profiling", c.RuntimeProfiling)
	}
	return cmwatch.Funcs{
		ConfigMap: name,
		Update: func(cm *corev1.ConfigMap) error {
			c, err := observability.NewConfigFromMap(cm.Data)
			if err != nil {
				logger.Errorw("Invalid config-observability ignored; keeping the last good one", zap.Error(err))
				return err
			}
			apply(c)
			return nil
		},
		Delete: func() { apply(observability.Defaults()) },
	}
}
