// Package lifecycle is the autoscaler process: what runs on every replica, what runs for the buckets
// this replica holds, and the order in which it all starts and stops. cmd/autoscaler only wires flags,
// environment and API clients into Run.
//
// Every replica, always: the websocket stat server (:8080, also the kubelet's probes), the Prometheus
// endpoint (:9090), pprof on :8008 while config-observability enables it, live watches of
// config-autoscaler, config-deployment, config-network, config-logging and config-observability, the
// informers, the collector with a collection per Metric, and the statforward peers.
//
// Per bucket (Leases autoscaler-bucket-XX-of-YY, as many as config-leader-election's buckets): the
// holder scrapes its revisions' pods, decides, reconciles their PodAutoscalers and writes their Metrics'
// status. A stat reaching any replica is recorded there and sent to every other Thaw replica, so all of
// them keep every revision's windows: when a holder dies, even by SIGKILL, the next one decides from a
// warm window instead of starting empty (upstream's new holder needs a whole stable window).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	"github.com/thaw-dev/thaw/pkg/autoscaler/bucket"
	"github.com/thaw-dev/thaw/pkg/autoscaler/kpa"
	"github.com/thaw-dev/thaw/pkg/autoscaler/statforward"
	"github.com/thaw-dev/thaw/pkg/autoscaler/statserver"
	"github.com/thaw-dev/thaw/pkg/cmwatch"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/faultinject"
	"github.com/thaw-dev/thaw/pkg/observability"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// Component names the process in logs, events and traces.
const Component = "autoscaler"

// statsQueue bounds the stats between the stat server and the collector, as upstream's statsCh does;
// a full queue pushes back on the sockets. Peers' stats have a queue of their own, so a burst from
// the activators never holds up what the other replicas send, nor the reverse.
const statsQueue = 1000

// Config is the process's configuration from flags and environment.
type Config struct {
	StatsAddr, MetricsAddr, ProfilingAddr string
	PodName, PodIP, Namespace             string
	LoggingName, ObservabilityName        string
	ShutdownTimeout                       time.Duration
	// ServiceName is the Service in front of every replica (upstream's `autoscaler`): its endpoints
	// are the peers stats are forwarded to.
	ServiceName string
	// StatPort is the peers' stat port (8080).
	StatPort int
	// MetricsPort is the peers' metrics port (9090), where a starting replica asks for their windows.
	MetricsPort int
	// FaultInjection is THAW_FAULT_INJECTION: only "enabled" builds the fault injector and watches
	// its ConfigMap (pkg/faultinject).
	FaultInjection string

	// allowLoopback lets tests run several replicas on loopback addresses.
	allowLoopback bool
}

// Deps are the API clients; tests pass fakes.
type Deps struct {
	Kube       kubernetes.Interface
	Serving    servingclientset.Interface
	Networking netclientset.Interface
	Dynamic    dynamic.Interface
	// Prober checks the activator is in a revision's path before scaling to zero; nil is the HTTP prober.
	Prober kpa.Prober
	// Clock is the time source; nil is the real clock.
	Clock clock.WithTicker
}

// CheckIdentity validates the Lease holder identity <POD_NAME>_<POD_IP>: other replicas dial the IP.
func CheckIdentity(podName, podIP string) error {
	if podName == "" || podIP == "" {
		return errors.New("POD_NAME and POD_IP must be set (downward API): they make the Lease holder identity")
	}
	ip := net.ParseIP(podIP)
	if ip == nil {
		return fmt.Errorf("POD_IP %q is not an IP address", podIP)
	}
	if ip.IsLoopback() {
		return fmt.Errorf("%w (POD_IP=%s)", bucket.ErrLoopbackIP, podIP)
	}
	return nil
}

// app is the process.
type app struct {
	cfg      Config
	deps     Deps
	clock    clock.WithTicker
	logger   *zap.SugaredLogger
	asStore  *cmwatch.Store[asconfig.Config]
	depStore *cmwatch.Store[asconfig.DeploymentConfig]
	netStore *cmwatch.Store[netConfig]
	recorder record.EventRecorder
	// cold times scales from zero and keeps the last ones for /debug/coldstarts.
	cold *coldstart.Recorder
	set  *bucket.Set
	el   *bucket.Elector
	fwd  *statforward.Forwarder
	p    *parts
	// faults injects faults on purpose; nil unless Config.FaultInjection is enabled.
	faults *faultinject.Injector
}

// timeOf is a stat's observation time; the stat server stamped a missing timestamp with its receipt time.
func timeOf(s wire.Stat) time.Time { return time.Unix(s.Timestamp, 0) }

// Run serves until ctx ends. ready, if not nil, receives the bound stat and metrics addresses once both
// listen.
func Run(ctx context.Context, cfg Config, d Deps, ready chan<- [2]string, logger *zap.SugaredLogger, level zap.AtomicLevel) error {
	if err := CheckIdentity(cfg.PodName, cfg.PodIP); err != nil && !(cfg.allowLoopback && errors.Is(err, bucket.ErrLoopbackIP)) {
		return err
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = Component
	}
	if cfg.StatPort == 0 {
		cfg.StatPort = 8080
	}
	if cfg.MetricsPort == 0 {
		cfg.MetricsPort = 9090
	}
	identity := bucket.Identity(cfg.PodName, cfg.PodIP)
	logger = logger.With("pod", cfg.PodName, "podIP", cfg.PodIP)
	a := &app{cfg: cfg, deps: d, clock: d.Clock, logger: logger}
	if a.clock == nil {
		a.clock = clock.RealClock{}
	}

	// ConfigMaps, watched live for the life of the process. cmwatch.Watch returns once every informer
	// has synced, so the reconcilers start with the cluster's values.
	a.asStore = asconfig.NewAutoscalerStore(logger)
	a.depStore = asconfig.NewDeploymentStore(logger)
	var err error
	if a.netStore, err = cmwatch.NewStore(networkConfigName, newNetConfigFromMap, logger); err != nil {
		return err
	}
	a.asStore.OnChange(func(*asconfig.Config) { a.resyncAll() })
	a.depStore.OnChange(func(*asconfig.DeploymentConfig) { a.resyncAll() })
	// The registry comes first: it installs the workqueue and client metrics before any queue exists,
	// and the OTLP export follows config-observability from its first sync.
	reg := observability.NewRegistry()
	id := observability.Identity{Service: Component, PodName: cfg.PodName, Namespace: cfg.Namespace, Version: observability.BuildVersion()}
	metricsExport := observability.NewMetricsExporter(id, reg)
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer scancel()
		_ = metricsExport.Shutdown(sctx)
	}()
	prof := observability.NewProfiling(false)
	watchCtx, stopWatches := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatches()
	a.initFaults()
	// The watches live until watchCtx ends; waiting for their first sync gives up when ctx does.
	if err := cmwatch.Watch(ctx, watchCtx, d.Kube, cfg.Namespace, append([]cmwatch.Handler{a.asStore, a.depStore, a.netStore,
		loggingHandler(cfg.LoggingName, logger, level),
		observabilityHandler(cfg.ObservabilityName, prof, metricsExport, logger)}, a.faultWatch()...)...); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before the API server answered
		}
		return err
	}

	// Events for scale changes; the broadcaster's queue is bounded by client-go and shut down on exit.
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
	a.recorder = broadcaster.NewRecorder(scheme, corev1.EventSource{Component: Component})

	tracing := a.tracing(ctx)
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer scancel()
		_ = tracing.Shutdown(sctx)
	}()
	coldOpts := coldstart.RecorderOptions{Registerer: reg}
	if tracing != nil {
		coldOpts.TracerProvider = tracing.Provider
	}
	a.cold = coldstart.NewRecorder(coldOpts)

	// Buckets, read once at start as upstream does.
	bc := bucket.ReadConfig(ctx, d.Kube, cfg.Namespace, logger)
	a.set = bucket.NewSet(bc.Buckets)
	a.el = &bucket.Elector{Kube: d.Kube, Namespace: cfg.Namespace, Identity: identity, Set: a.set, Config: bc,
		Promote: a.promote, Demote: a.demote, Logger: logger.Named("elector")}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "thaw_autoscaler_buckets_held",
		Help: "Buckets (autoscaler-bucket-XX-of-YY Leases) this replica holds.",
	}, func() float64 { return float64(len(a.el.Owned())) }))

	// Peers live as long as the process; stopped after the stat server.
	fwdCtx, stopFwd := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFwd()
	a.fwd = statforward.New(fwdCtx, statforward.Options{SelfIP: cfg.PodIP, BindSelf: true, Port: cfg.StatPort,
		OwnerIP: a.ownerIP, Clock: a.clock, Logger: logger.Named("forward")})
	defer a.fwd.Close()
	reg.MustRegister(a.fwd)

	if a.p, err = a.newParts(logger, reg); err != nil {
		return err
	}
	defer a.p.coll.Close()
	a.startFaults(reg)

	statsLn, err := net.Listen("tcp", cfg.StatsAddr)
	if err != nil {
		return fmt.Errorf("stat server: %w", err)
	}
	// HTTPS on the metrics port exactly when upstream's would serve it; an invalid METRICS_PROMETHEUS_TLS_*
	// stops the start, as upstream's. Peers then cannot seed from this replica's windows over plain HTTP
	// and start empty, as upstream's replicas always do.
	metricsTLS, err := observability.MetricsTLSFromEnv(a.startObservability(ctx).MetricsProtocol, os.Getenv)
	if err != nil {
		statsLn.Close()
		return fmt.Errorf("metrics server: %w", err)
	}
	metricsLn, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		statsLn.Close()
		return fmt.Errorf("metrics server: %w", err)
	}
	var profLn net.Listener
	if cfg.ProfilingAddr != "" {
		if profLn, err = net.Listen("tcp", cfg.ProfilingAddr); err != nil {
			statsLn.Close()
			metricsLn.Close()
			return fmt.Errorf("profiling server: %w", err)
		}
	}

	stats := make(chan wire.StatMessage, statsQueue)
	peerStats := make(chan wire.StatMessage, statsQueue)
	ss := statserver.New(cfg.StatsAddr, stats, statserver.Options{Registerer: reg, OwnsBucket: a.el.OwnsBucket,
		PeerSubprotocol: statforward.Subprotocol, PeerOut: peerStats, PeerAllowed: a.fwd.IsPeer}, a.clock, logger)
	mux := http.NewServeMux()
	mux.Handle("/metrics", observability.MetricsHandler(reg, id))
	mux.Handle("/debug/coldstarts", a.cold.Ring())
	mux.HandleFunc(windowsPath, a.serveWindows)
	metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second, TLSConfig: metricsTLS}
	var profSrv *http.Server
	if profLn != nil {
		profSrv = observability.NewProfilingServer(cfg.ProfilingAddr, prof)
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
	serve("metrics server", func() error { return observability.ServeMetrics(metricsSrv, metricsLn) })
	if profSrv != nil {
		serve("profiling server", func() error { return profSrv.Serve(profLn) })
	}

	// The consumer: every stat is recorded here, sent on to the peers when it came from outside the
	// fleet, and pokes the decider when this replica holds its bucket. It never blocks on a peer.
	consumerCtx, stopConsumer := context.WithCancel(context.WithoutCancel(ctx))
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for {
			select {
			case <-consumerCtx.Done():
				return
			case sm := <-stats:
				if a.faults.DropStat(sm) {
					continue
				}
				a.fwd.Forward(sm)
				a.take(sm)
			case sm := <-peerStats:
				a.take(sm)
			}
		}
	}()

	// Informers and reconcilers run for the life of the process; the elector only moves buckets.
	partsCtx, stopParts := context.WithCancel(context.WithoutCancel(ctx))
	defer stopParts()
	partsDone := make(chan struct{})
	if err := a.p.start(partsCtx, ctx); err != nil {
		stopParts()
		a.shutdownServers(ss, metricsSrv, profSrv, stopConsumer, consumerDone, &servers)
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	go func() {
		defer close(partsDone)
		a.p.run(partsCtx, logger)
	}()

	// Before campaigning, take the other replicas' windows: a replica restarted in place (SIGKILL, OOM)
	// keeps its identity and retakes its own Leases at once, and must not decide from empty windows.
	a.refreshPeers()
	a.seedFromPeers(ctx)

	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	electDone := make(chan error, 1)
	go func() { electDone <- a.el.Run(electCtx) }()

	if ready != nil {
		ready <- [2]string{statsLn.Addr().String(), metricsLn.Addr().String()}
	}
	logger.Infow("Autoscaler serving", "stats", statsLn.Addr().String(), "metrics", metricsLn.Addr().String(),
		"identity", identity, "buckets", bc.Buckets, "leaseDuration", bc.LeaseDuration,
		"renewDeadline", bc.RenewDeadline, "retryPeriod", bc.RetryPeriod)

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

	// 1. The reconcilers and scrapers stop while the Leases are still held,
	// 2. then the Leases are released so other replicas take the buckets at once,
	// 3. then the activators are told 1012 and reconnect elsewhere,
	// 4. then the peers are closed.
	stopParts()
	<-partsDone
	stopElection()
	// The release is bounded on its own, so that an unreachable API server does not eat the servers'
	// shutdown time.
	select {
	case <-electDone:
	case <-time.After(cfg.ShutdownTimeout):
		logger.Warn("Lease release did not finish in time")
	}
	a.shutdownServers(ss, metricsSrv, profSrv, stopConsumer, consumerDone, &servers)
	stopWatches()
	return runErr
}

// take records a stat and pokes its decider when this replica holds the revision's bucket.
func (a *app) take(sm wire.StatMessage) {
	a.p.coll.Record(sm.Key, timeOf(sm.Stat), sm.Stat)
	a.p.kpa.ObserveStat(sm.Key, sm.Stat)
	if a.el.Owns(sm.Key) {
		a.p.ms.Poke(sm.Key, sm.Stat)
	}
}

func (a *app) shutdownServers(ss *statserver.Server, metricsSrv, profSrv *http.Server, stopConsumer context.CancelFunc,
	consumerDone <-chan struct{}, servers *sync.WaitGroup) {
	sctx, scancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer scancel()
	if err := ss.Shutdown(sctx); err != nil {
		a.logger.Warnw("Stat server shutdown", zap.Error(err))
	}
	stopConsumer()
	<-consumerDone
	if err := metricsSrv.Shutdown(sctx); err != nil {
		a.logger.Warnw("Metrics server shutdown", zap.Error(err))
	}
	if profSrv != nil {
		_ = profSrv.Shutdown(sctx)
	}
	servers.Wait()
}

// promote runs when this replica wins a bucket: its Service and EndpointSlice are pointed here (for
// upstream's forwarders), and its PodAutoscalers and Metrics are reconciled by this replica from now on.
func (a *app) promote(ctx context.Context, b string) {
	go func() {
		for ctx.Err() == nil {
			err := bucket.EnsureEndpoints(ctx, a.deps.Kube, a.cfg.Namespace, b, a.cfg.PodIP, int32(a.cfg.StatPort))
			if err == nil {
				return
			}
			if ctx.Err() == nil {
				a.logger.Warnw("Cannot point the bucket Service here; retrying", "bucket", b, zap.Error(err))
			}
			t := a.clock.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C():
			}
		}
	}()
	a.p.kpa.ResyncAll()
	a.p.metric.ResyncAll()
}

// demote runs when a bucket is lost: its deciders go (the new holder decides).
func (a *app) demote(string) { a.p.kpa.ResyncAll() }

// resyncAll reconciles every PA (on a config change).
func (a *app) resyncAll() {
	if a.p != nil {
		a.p.kpa.ResyncAll()
	}
}

// tracing builds OpenTelemetry tracing from config-observability as it is at start (as the activator
// does; a change needs a restart). nil: off.
func (a *app) tracing(ctx context.Context) *observability.Tracing {
	t, err := observability.NewTracing(ctx, a.startObservability(ctx), observability.Identity{Service: Component, PodName: a.cfg.PodName,
		Namespace: a.cfg.Namespace}, os.Stdout)
	if err != nil {
		a.logger.Errorw("Tracing disabled", zap.Error(err))
		return nil
	}
	return t
}

// startObservability is config-observability as it is now, or the defaults when it cannot be read or is
// invalid: what upstream's process reads once at start.
func (a *app) startObservability(ctx context.Context) *observability.Config {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if cm, err := a.deps.Kube.CoreV1().ConfigMaps(a.cfg.Namespace).Get(cctx, a.cfg.ObservabilityName, metav1.GetOptions{}); err == nil {
		if c, err := observability.NewConfigFromMap(cm.Data); err == nil {
			return c
		}
	}
	return observability.Defaults()
}
