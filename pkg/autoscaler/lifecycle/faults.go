package lifecycle

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/kpa"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/cmwatch"
	"github.com/thaw-dev/thaw/pkg/faultinject"
)

// initFaults builds the fault injector when Config.FaultInjection is THAW_FAULT_INJECTION's "enabled";
// otherwise a.faults stays nil: the ConfigMap is not watched and nothing is wrapped.
func (a *app) initFaults() {
	on, err := faultinject.Enabled(func(string) string { return a.cfg.FaultInjection })
	if err != nil {
		a.logger.Errorw("Fault injection stays off", zap.Error(err))
	}
	if !on {
		return
	}
	a.logger.Warnw("Fault injection is enabled: faults set in the ConfigMap are injected on purpose",
		"configmap", faultinject.ConfigMapName)
	clk, ok := a.clock.(clock.WithDelayedExecution)
	if !ok {
		clk = clock.RealClock{}
	}
	a.faults = faultinject.New(faultinject.Options{Component: faultinject.Autoscaler, Clock: clk,
		Logger: a.logger.Named("faultinject")})
}

// faultWatch is the ConfigMap watch fault injection needs: none when it is off.
func (a *app) faultWatch() []cmwatch.Handler {
	if a.faults == nil {
		return nil
	}
	return []cmwatch.Handler{a.faults}
}

// startFaults registers the metrics and, once the parts exist, reconciles every PA at each change of
// the faults (a freeze changed or expired) from its fresh decision: a decider whose wish did not
// change during the freeze would not tell the reconciler again.
func (a *app) startFaults(reg prometheus.Registerer) {
	if a.faults != nil {
		reg.MustRegister(a.faults.Collectors()...)
		a.faults.OnChange(a.resyncAll)
	}
}

// faultScales wraps the /scale client (slow writes).
func (a *app) faultScales(s kpa.ScaleClient) kpa.ScaleClient {
	if a.faults == nil {
		return s
	}
	return a.faults.WrapScales(s)
}

// faultDeciders wraps the deciders as the PodAutoscaler reconciler reads them (frozen decisions).
func (a *app) faultDeciders(ms *multiscaler.MultiScaler) kpa.Deciders {
	if a.faults == nil {
		return ms
	}
	return faultinject.FreezeDeciders[multiscaler.Status, decider.Spec, multiscaler.Labels](a.faults, ms)
}
