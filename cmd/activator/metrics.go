package main

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"github.com/thaw-dev/thaw/pkg/observability"
)

// metricsApplyTimeout bounds a config change's flush of the old OTLP export, so that a collector
// gone away does not hold up the ConfigMap watch.
const metricsApplyTimeout = 5 * time.Second

// applyMetricsExport makes the OTLP metrics export what config-observability says (metrics-protocol
// grpc or http/protobuf, metrics-endpoint, metrics-export-interval). Prometheus on :9090 is served
// whatever it says.
func applyMetricsExport(exp *observability.MetricsExporter, cfg *observability.Config, logger *zap.SugaredLogger) {
	ctx, cancel := context.WithTimeout(context.Background(), metricsApplyTimeout)
	defer cancel()
	changed, err := exp.Apply(ctx, cfg)
	switch {
	case err != nil:
		logger.Errorw("OTLP metrics export is off", zap.Error(err))
	case changed && exp.Active():
		logger.Infow("Exporting metrics over OTLP", "protocol", cfg.MetricsProtocol, "endpoint", cfg.MetricsEndpoint,
			"interval", cfg.MetricsExportInterval)
	case changed:
		logger.Infow("No OTLP metrics export", "metrics-protocol", cfg.MetricsProtocol)
	}
}

// withMetricsExport adds the OTLP export's reaction to a config-observability handler. An invalid
// ConfigMap is left to h, which reports it; the export stays as it was.
func withMetricsExport(h func(*corev1.ConfigMap) error, exp *observability.MetricsExporter, logger *zap.SugaredLogger) func(*corev1.ConfigMap) error {
	return func(cm *corev1.ConfigMap) error {
		if err := h(cm); err != nil {
			return err
		}
		if cfg, err := observability.NewConfigFromMap(cm.Data); err == nil {
			applyMetricsExport(exp, cfg, logger)
		}
		return nil
	}
}

// measured puts the client metrics under wrap (tracing): the duration is the round trip's own.
func measured(m *observability.HTTPClientMetrics, wrap func(http.RoundTripper) http.RoundTripper) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		rt = m.Wrap(rt)
		if wrap != nil {
			rt = wrap(rt)
		}
		return rt
	}
}
