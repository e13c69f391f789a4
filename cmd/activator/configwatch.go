package main

import (
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	pkglogging "knative.dev/pkg/logging"

	"github.com/thaw-dev/thaw/pkg/activator"
	"github.com/thaw-dev/thaw/pkg/cmwatch"
	"github.com/thaw-dev/thaw/pkg/observability"
)

// configWatches are the ConfigMaps the activator follows at run time (cmwatch, in the system
// namespace, which the activator's RBAC grants): config-logging's level, config-observability's
// profiling, request log and OTLP export, and thaw-fault-injection when fault injection is on.
// A deleted config-logging or config-observability keeps its last values, as upstream's watcher
// does without defaults.
func configWatches(e *env, logger *zap.SugaredLogger, level zap.AtomicLevel, p *observability.Profiling,
	rl *activator.RequestLogger, exp *observability.MetricsExporter, flt faults) []cmwatch.Handler {
	return append([]cmwatch.Handler{
		cmwatch.Funcs{ConfigMap: e.ConfigLoggingName, Update: loggingHandler(logger, level)},
		cmwatch.Funcs{ConfigMap: e.ConfigObservabilityName,
			Update: withMetricsExport(observabilityHandler(p, rl, logger), exp, logger)},
	}, flt.watches()...)
}

// observabilityHandler applies runtime-profiling and the request log; an invalid ConfigMap changes
// nothing, with one log line.
func observabilityHandler(p *observability.Profiling, rl *activator.RequestLogger, logger *zap.SugaredLogger) func(*corev1.ConfigMap) error {
	return func(cm *corev1.ConfigMap) error {
		cfg, err := observability.NewConfigFromMap(cm.Data)
		if err != nil {
			logger.Errorw("Ignoring invalid config-observability", zap.Error(err))
			return err
		}
		applyObservability(cfg, p, rl, logger)
		return nil
	}
}

func applyObservability(cfg *observability.Config, p *observability.Profiling, rl *activator.RequestLogger, logger *zap.SugaredLogger) {
	p.SetEnabled(cfg.RuntimeProfiling)
	tmpl := ""
	if cfg.EnableRequestLog {
		tmpl = cfg.RequestLogTemplate
	}
	if err := rl.SetTemplate(tmpl); err != nil {
		logger.Errorw("Ignoring invalid request log template", zap.Error(err))
	}
}

// loggingHandler applies config-logging's level for the activator (an invalid level is logged by
// knative.dev/pkg's updater, which keeps the level).
func loggingHandler(logger *zap.SugaredLogger, level zap.AtomicLevel) func(*corev1.ConfigMap) error {
	update := pkglogging.UpdateLevelFromConfigMap(logger, level, component)
	return func(cm *corev1.ConfigMap) error { update(cm); return nil }
}
