package main

import (
	"context"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	pkglogging "knative.dev/pkg/logging"

	"github.com/thaw-dev/thaw/pkg/activator"
	"github.com/thaw-dev/thaw/pkg/observability"
)

// configHandlers apply ConfigMap changes at run time, by name.
type configHandlers map[string]func(*corev1.ConfigMap)

// watchConfigMaps runs a ConfigMap informer in ns (the activator's RBAC
// grants exactly that) until ctx ends, calling the handler of each changed
// ConfigMap it knows, and dels' of each deleted one (the others keep their
// last values, as upstream's watcher does without defaults).
func watchConfigMaps(ctx context.Context, kube kubernetes.Interface, ns string, hs configHandlers, dels map[string]func()) {
	f := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().ConfigMaps().Informer()
	apply := func(obj interface{}) {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			if h := hs[cm.Name]; h != nil {
				h(cm)
			}
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj interface{}) { apply(obj) },
		DeleteFunc: func(obj interface{}) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				if d := dels[cm.Name]; d != nil {
					d()
				}
			}
		},
	})
	inf.Run(ctx.Done())
}

// observabilityHandler applies runtime-profiling and the request log.
func observabilityHandler(p *observability.Profiling, rl *activator.RequestLogger, logger *zap.SugaredLogger) func(*corev1.ConfigMap) {
	return func(cm *corev1.ConfigMap) {
		cfg, err := observability.NewConfigFromMap(cm.Data)
		if err != nil {
			logger.Errorw("Ignoring invalid config-observability", zap.Error(err))
			return
		}
		applyObservability(cfg, p, rl, logger)
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

// loggingHandler applies config-logging's level for the activator.
func loggingHandler(logger *zap.SugaredLogger, level zap.AtomicLevel) func(*corev1.ConfigMap) {
	return pkglogging.UpdateLevelFromConfigMap(logger, level, component)
}
