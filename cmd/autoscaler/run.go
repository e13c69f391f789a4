package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	servingclientset "knative.dev/serving/pkg/client/clientset/versioned"
	servingscheme "knative.dev/serving/pkg/client/clientset/versioned/scheme"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/kpa"
	"github.com/thaw-dev/thaw/pkg/observability"
	"github.com/thaw-dev/thaw/pkg/statserver"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// statsQueue bounds the stats between the stat server and the collector, as
// upstream's statsCh does; a full queue pushes back on the sockets.
const statsQueue = 1000

// deps are the API clients; tests pass fakes.
type deps struct {
	Kube       kubernetes.Interface
	Serving    servingclientset.Interface
	Networking netclientset.Interface
	Dynamic    dynamic.Interface
	// Prober checks the activator is in a revision's path before scaling
	// to zero; nil is the HTTP prober.
	Prober kpa.Prober
	// Clock is the time source; nil is the real clock.
	Clock clock.WithTicker
}

// app is the process: what lives across leadership terms.
type app struct {
	cfg      config
	deps     deps
	clock    clock.WithTicker
	logger   *zap.SugaredLogger
	asStore  *asconfig.Store[asconfig.Config]
	depStore *asconfig.Store[asconfig.DeploymentConfig]
	netStore *asconfig.Store[netConfig]
	recorder record.EventRecorder
	// cur is the running term, nil while not leading.
	cur atomic.Pointer[term]
	// notLeading counts stats dropped because no term runs.
	notLeading prometheus.Counter
	// cold times scales from zero across terms and keeps the last ones
	// for /debug/coldstarts.
	cold *coldstart.Recorder
}

// timeOf is a stat's observation time; the stat server stamped a missing
// timestamp with its receipt time.
func timeOf(s wire.Stat) time.Time { return time.Unix(s.Timestamp, 0) }

// run serves until ctx ends. ready, if not nil, receives the bound stat and
// metrics addresses once both listen.
func run(ctx context.Context, cfg config, d deps, ready chan<- [2]string, logger *zap.SugaredLogger, level zap.AtomicLevel) error {
	if err := checkIdentity(cfg); err != nil {
		return err
	}
	identity := cfg.podName + "_" + cfg.podIP
	logger = logger.With("pod", cfg.podName, "podIP", cfg.podIP)
	a := &app{cfg: cfg, deps: d, clock: d.Clock, logger: logger}
	if a.clock == nil {
		a.clock = clock.RealClock{}
	}

	// ConfigMaps, watched live for the life of the process. Each Watch
	// returns once its informer has synced, so the first term starts with
	// the cluster's values.
	a.asStore = asconfig.NewAutoscalerStore(logger)
	a.depStore = asconfig.NewDeploymentStore(logger)
	var err error
	if a.netStore, err = asconfig.NewStore(networkConfigName, newNetConfigFromMap, logger); err != nil {
		return err
	}
	a.asStore.OnChange(func(*asconfig.Config) { a.resyncAll() })
	a.depStore.OnChange(func(*asconfig.DeploymentConfig) { a.resyncAll() })
	prof := observability.NewProfiling(false)
	watchCtx, stopWatches := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatches()
	for _, h := range []asconfig.ConfigMapHandler{a.asStore, a.depStore, a.netStore,
		loggingHandler(cfg.loggingName, logger, level),
		observabilityHandler(cfg.obsName, prof, logger)} {
		if err := watchUntil(ctx, watchCtx, d.Kube, cfg.ns, h); err != nil {
			if ctx.Err() != nil {
				return nil // stopped before the API server answered
			}
			return err
		}
	}

	// Events for scale changes; the broadcaster's queue is bounded by
	// client-go and it is shut down on exit.
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := servingscheme.AddToScheme(scheme); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(watchCtx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: d.Kube.CoreV1().Events("")})
	a.recorder = broadcaster.NewRecorder(scheme, corev1.EventSource{Component: component})

	// Metrics: process-wide ones on reg, the running term's gathered too.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.notLeading = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "thaw_autoscaler_stats_not_leading_total",
		Help: "Stats dropped because this replica did not hold the Lease.",
	})
	reg.MustRegister(a.notLeading)
	tracing := a.tracing(ctx)
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer scancel()
		_ = tracing.Shutdown(sctx)
	}()
	coldOpts := coldstart.RecorderOptions{Registerer: reg}
	if tracing != nil {
		coldOpts.TracerProvider = tracing.Provider
	}
	a.cold = coldstart.NewRecorder(coldOpts)
	gatherers := prometheus.Gatherers{reg, prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		if t := a.cur.Load(); t != nil {
			return t.reg.Gather()
		}
		return nil, nil
	})}

	statsLn, err := net.Listen("tcp", cfg.statsAddr)
	if err != nil {
		return fmt.Errorf("stat server: %w", err)
	}
	metricsLn, err := net.Listen("tcp", cfg.metricsAddr)
	if err != nil {
		statsLn.Close()
		return fmt.Errorf("metrics server: %w", err)
	}
	var profLn net.Listener
	if cfg.profilingAddr != "" {
		if profLn, err = net.Listen("tcp", cfg.profilingAddr); err != nil {
			statsLn.Close()
			metricsLn.Close()
			return fmt.Errorf("profiling server: %w", err)
		}
	}

	stats := make(chan wire.StatMessage, statsQueue)
	ss := statserver.New(cfg.statsAddr, stats, statserver.Options{Registerer: reg}, a.clock, logger)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{}))
	mux.Handle("/debug/coldstarts", a.cold.Ring())
	metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	var profSrv *http.Server
	if profLn != nil {
		profSrv = observability.NewProfilingServer(cfg.profilingAddr, prof)
	}

	errs := make(chan error, 4)
	var servers sync.WaitGroup
	serve := func(name string, f func() error) {
		servers.Go(func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	serve("stat server", func() error { return ss.Serve(statsLn) })
	serve("metrics server", func() error { return metricsSrv.Serve(metricsLn) })
	if profSrv != nil {
		serve("profiling server", func() error { return profSrv.Serve(profLn) })
	}

	// The consumer: every stat goes to the running term, if any.
	consumerCtx, stopConsumer := context.WithCancel(context.WithoutCancel(ctx))
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for {
			select {
			case <-consumerCtx.Done():
				return
			case sm := <-stats:
				if t := a.cur.Load(); t != nil {
					t.accept(sm)
				} else {
					a.notLeading.Inc()
				}
			}
		}
	}()

	// Leader election: terms stop on termsStop (first), the Lease is
	// released when electCtx ends (after).
	times := readElectionTimes(ctx, d.Kube, cfg.ns, logger)
	el := &elector{kube: d.Kube, ns: cfg.ns, id: identity, times: times, lead: a.lead, logger: logger}
	termsStop, stopTerms := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTerms()
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	electDone := make(chan error, 1)
	go func() { electDone <- el.run(electCtx, termsStop) }()

	if ready != nil {
		ready <- [2]string{statsLn.Addr().String(), metricsLn.Addr().String()}
	}
	logger.Infow("Autoscaler serving", "stats", statsLn.Addr().String(), "metrics", metricsLn.Addr().String(),
		"identity", identity, "lease", cfg.ns+"/"+leaseName, "leaseDuration", times.LeaseDuration,
		"renewDeadline", times.RenewDeadline, "retryPeriod", times.RetryPeriod)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	case runErr = <-electDone:
		if runErr == nil {
			runErr = errors.New("leader election ended")
		}
	}
	logger.Infow("Shutting down", "cause", context.Cause(ctx), zap.NamedError("error", runErr))

	// 1. The reconcilers and scrapers stop while the Lease is still held,
	// 2. then the Lease is released so another replica leads at once,
	// 3. then the activators are told 1012 and reconnect elsewhere.
	stopTerms()
	el.waitTerms()
	stopElection()
	// The release is bounded on its own, so that an unreachable API server
	// does not eat the servers' shutdown time.
	select {
	case <-electDone:
	case <-time.After(cfg.shutdownTimeout):
		logger.Warn("Lease release did not finish in time")
	}
	sctx, scancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer scancel()
	if err := ss.Shutdown(sctx); err != nil {
		logger.Warnw("Stat server shutdown", zap.Error(err))
	}
	stopConsumer()
	<-consumerDone
	if err := metricsSrv.Shutdown(sctx); err != nil {
		logger.Warnw("Metrics server shutdown", zap.Error(err))
	}
	if profSrv != nil {
		_ = profSrv.Shutdown(sctx)
	}
	servers.Wait()
	stopWatches()
	return runErr
}

// tracing builds OpenTelemetry tracing from config-observability as it is
// at start (as the activator does; a change needs a restart). nil: off.
func (a *app) tracing(ctx context.Context) *observability.Tracing {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	oc := observability.Defaults()
	if cm, err := a.deps.Kube.CoreV1().ConfigMaps(a.cfg.ns).Get(cctx, a.cfg.obsName, metav1.GetOptions{}); err == nil {
		if c, err := observability.NewConfigFromMap(cm.Data); err == nil {
			oc = c
		}
	}
	t, err := observability.NewTracing(ctx, oc, observability.Identity{Service: component, PodName: a.cfg.podName,
		Namespace: a.cfg.ns}, os.Stdout)
	if err != nil {
		a.logger.Errorw("Tracing disabled", zap.Error(err))
		return nil
	}
	return t
}

// watchUntil starts a live watch of one ConfigMap; the watch lasts until
// watchCtx ends, but waiting for its first sync gives up when ctx does.
func watchUntil(ctx, watchCtx context.Context, kube kubernetes.Interface, ns string, h asconfig.ConfigMapHandler) error {
	wctx, cancel := context.WithCancel(watchCtx)
	stop := context.AfterFunc(ctx, cancel)
	err := asconfig.Watch(wctx, kube, ns, h)
	if !stop() && err != nil {
		return fmt.Errorf("ConfigMap %s: %w", h.Name(), context.Cause(ctx))
	}
	if err != nil {
		cancel()
		return err
	}
	// The watch now lives with watchCtx only.
	context.AfterFunc(watchCtx, cancel)
	return nil
}
