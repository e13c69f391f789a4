package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/cmwatch"
	"github.com/thaw-dev/thaw/pkg/faultinject"
)

// faults is fault injection as the activator wires it. Its inj is nil unless the Deployment sets
// THAW_FAULT_INJECTION=enabled; then every method below returns what it was given, and the
// thaw-fault-injection ConfigMap gets no handler, so nothing of the package runs.
type faults struct{ inj *faultinject.Injector }

// newFaults reads the switch (env.FaultInjection); a value other than enabled/disabled is one error
// line and leaves it off.
func newFaults(value string, clk clock.WithDelayedExecution, reg prometheus.Registerer, logger *zap.SugaredLogger) faults {
	on, err := faultinject.Enabled(func(string) string { return value })
	if err != nil {
		logger.Errorw("Fault injection stays off", zap.Error(err))
	}
	if !on {
		return faults{}
	}
	logger.Warnw("Fault injection is enabled: faults set in the ConfigMap are injected on purpose",
		"configmap", faultinject.ConfigMapName)
	return faults{inj: faultinject.New(faultinject.Options{Component: faultinject.Activator, Clock: clk,
		Logger: logger.Named("faultinject"), Registerer: reg})}
}

// sink wraps the stat sender (pokes and periodic stats to the autoscaler).
func (f faults) sink(s concurrency.Sink, clk clock.WithDelayedExecution) concurrency.Sink {
	if f.inj == nil {
		return s
	}
	return f.inj.WrapSink(s, clk)
}

// podTransport wraps the proxy's transports (the activator → pod hop) inside wrap (tracing), so a
// trace shows the injected latency and errors.
func (f faults) podTransport(wrap func(http.RoundTripper) http.RoundTripper) func(http.RoundTripper) http.RoundTripper {
	if f.inj == nil {
		return wrap
	}
	return func(rt http.RoundTripper) http.RoundTripper {
		rt = f.inj.WrapPodTransport(rt)
		if wrap != nil {
			rt = wrap(rt)
		}
		return rt
	}
}

// probeTransport wraps the transport of the endpoints prober.
func (f faults) probeTransport(rt http.RoundTripper) http.RoundTripper {
	if f.inj == nil {
		return rt
	}
	return f.inj.WrapProbeTransport(rt)
}

// watches is the ConfigMap watch fault injection needs: none when it is off.
func (f faults) watches() []cmwatch.Handler {
	if f.inj == nil {
		return nil
	}
	return []cmwatch.Handler{f.inj}
}
