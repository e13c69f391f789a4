package observability

import (
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry with what every upstream component exports besides its own
// instruments: client_golang's Go runtime and process collectors (upstream's default registry), OTel's
// runtime instruments and the Kubernetes client and workqueue metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newRuntimeCollector())
	reg.MustRegister(KubernetesMetrics()...)
	return reg
}

// NewMetricsServer serves reg at /metrics on addr (":9090") as upstream's Prometheus page (see
// MetricsHandler). Thaw serves it whatever metrics-protocol says, where upstream serves it only with
// prometheus: 9090 is the declared metrics port, and the autoscaler's replicas use it between them.
func NewMetricsServer(addr string, reg *prometheus.Registry, id Identity) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", MetricsHandler(reg, id))
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: time.Minute}
}

// Profiling serves pprof while enabled, and 404 otherwise, so that a
// config-observability change toggles it without a restart (as upstream).
type Profiling struct {
	enabled atomic.Bool
	mux     *http.ServeMux
}

// NewProfiling returns a Profiling handler, initially enabled or not.
func NewProfiling(enabled bool) *Profiling {
	p := &Profiling{mux: http.NewServeMux()}
	p.mux.HandleFunc("/debug/pprof/", pprof.Index)
	p.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	p.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	p.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	p.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	p.enabled.Store(enabled)
	return p
}

// SetEnabled turns profiling on or off.
func (p *Profiling) SetEnabled(on bool) { p.enabled.Store(on) }

// Enabled reports whether profiling is on.
func (p *Profiling) Enabled() bool { return p.enabled.Load() }

func (p *Profiling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.enabled.Load() {
		http.NotFound(w, r)
		return
	}
	p.mux.ServeHTTP(w, r)
}

// NewProfilingServer serves p on addr (":8008").
func NewProfilingServer(addr string, p *Profiling) *http.Server {
	return &http.Server{Addr: addr, Handler: p, ReadHeaderTimeout: time.Minute}
}
