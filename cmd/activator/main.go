// Command activator is Thaw's drop-in for Knative Serving's activator: same
// ports, env, RBAC and probes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
	pkglogging "knative.dev/pkg/logging"
	pkgnetwork "knative.dev/pkg/network"
	servingclient "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/thaw-dev/thaw/pkg/activator"
	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/statsink"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/pkg/cmwatch"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/observability"
)

const component = "activator"

type flags struct {
	kubeconfig, server string
	qps                float64
	burst              int
}

func parseFlags(args []string, getenv func(string) string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet(component, flag.ContinueOnError)
	fs.StringVar(&f.kubeconfig, "kubeconfig", getenv("KUBECONFIG"), "Path to a kubeconfig; in-cluster config when empty.")
	fs.StringVar(&f.server, "server", "", "The address of the Kubernetes API server; overrides the kubeconfig.")
	qps, burst := 0.0, 0
	if v := getenv("KUBE_API_QPS"); v != "" {
		q, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid KUBE_API_QPS %q", v)
		}
		qps = q
	}
	if v := getenv("KUBE_API_BURST"); v != "" {
		b, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("invalid KUBE_API_BURST %q", v)
		}
		burst = b
	}
	fs.Float64Var(&f.qps, "kube-api-qps", qps, "Maximum QPS to the API server from this client.")
	fs.IntVar(&f.burst, "kube-api-burst", burst, "Maximum burst for throttle.")
	// Accepted for compatibility with upstream's shared flags.
	fs.String("cluster", "", "Defaults to the current cluster in the kubeconfig (ignored).")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return f, nil
}

func restConfig(f *flags) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if f.kubeconfig == "" && f.server == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags(f.server, f.kubeconfig)
	}
	if err != nil {
		return nil, err
	}
	if f.qps > 0 {
		cfg.QPS = float32(f.qps)
	}
	if f.burst > 0 {
		cfg.Burst = f.burst
	}
	return cfg, nil
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	// Before any API call: client-go takes its metrics providers once, and the ConfigMap reads below
	// are requests upstream counts too.
	observability.KubernetesMetrics()
	f, err := parseFlags(os.Args[1:], os.Getenv)
	if err != nil {
		return err
	}
	e, err := loadEnv(os.Getenv)
	if err != nil {
		return err
	}
	if e.ClusterDomain == "" {
		e.ClusterDomain = pkgnetwork.GetClusterDomainName()
	}
	cfg, err := restConfig(f)
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	serving, err := servingclient.NewForConfig(cfg)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	getCM := func(name string) map[string]string {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		cm, err := kube.CoreV1().ConfigMaps(e.SystemNamespace).Get(cctx, name, metav1.GetOptions{})
		if err != nil {
			log.Printf("Using defaults: cannot read ConfigMap %s/%s: %v", e.SystemNamespace, name, err)
			return nil
		}
		return configData(cm)
	}

	logCfg, err := pkglogging.NewConfigFromMap(getCM(e.ConfigLoggingName))
	if err != nil {
		return fmt.Errorf("%s: %w", e.ConfigLoggingName, err)
	}
	logger, level := pkglogging.NewLoggerFromConfig(logCfg, component)
	logger = logger.With(zap.String("knative.dev/controller", component), zap.String("knative.dev/pod", e.PodName))
	defer logger.Sync()

	obsCfg, err := observability.NewConfigFromMap(getCM(e.ConfigObservabilityName))
	if err != nil {
		// Invalid observability config must not take the data plane down.
		logger.Errorw("Invalid config-observability; using defaults", zap.Error(err))
		obsCfg = observability.Defaults()
	}
	netData := getCM("config-network")
	meshMode, err := endpoints.ParseMeshMode(netData["mesh-compatibility-mode"])
	if err != nil {
		logger.Errorw("Invalid config-network; using mesh-compatibility-mode auto", zap.Error(err))
		meshMode = endpoints.MeshAuto
	}
	passthrough := strings.EqualFold(netData["enable-mesh-pod-addressability"], "true")
	if e.InternalTLS, err = internaltls.Enabled(netData); err != nil {
		logger.Errorw("Invalid config-network; system-internal-tls stays disabled", zap.Error(err))
	}

	return runActivator(ctx, e, obsCfg, kube, serving, meshMode, passthrough, logger, level)
}

func configData(cm *corev1.ConfigMap) map[string]string { return cm.Data }

func runActivator(ctx context.Context, e *env, obsCfg *observability.Config, kube kubernetes.Interface,
	serving servingclient.Interface, meshMode endpoints.MeshMode, passthrough bool, logger *zap.SugaredLogger, level zap.AtomicLevel) error {
	clk := clock.RealClock{}
	reg := observability.NewRegistry()
	id := observability.Identity{Service: component, PodName: e.PodName, Namespace: e.SystemNamespace, Version: observability.BuildVersion()}
	// HTTPS on the metrics port exactly when upstream's would serve it; an invalid METRICS_PROMETHEUS_TLS_*
	// stops the start, as upstream's.
	metricsSrv := observability.NewMetricsServer(e.MetricsAddr, reg, id)
	var err error
	if metricsSrv.TLSConfig, err = observability.MetricsTLSFromEnv(obsCfg.MetricsProtocol, os.Getenv); err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	metricsExport := observability.NewMetricsExporter(id, reg)
	applyMetricsExport(metricsExport, obsCfg, logger)
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = metricsExport.Shutdown(sctx)
	}()

	tracing, err := observability.NewTracing(ctx, obsCfg, id, os.Stdout)
	if err != nil {
		logger.Errorw("Tracing disabled", zap.Error(err))
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		tracing.Shutdown(sctx)
	}()

	transport := proxy.NewTransport(e.MaxIdleProxyConns, e.MaxIdleProxyConnsPerHost)
	popts := proxy.Options{}
	icfg := activator.InstrumentConfig{Clock: clk}
	if tracing != nil {
		popts.WrapTransport = tracing.WrapTransport
		icfg.TracerProvider, icfg.Propagator = tracing.Provider, tracing.Propagator
	}
	// Requests to pods are measured as upstream's otelhttp transport measures them, nearest the wire.
	clientMetrics := observability.NewHTTPClientMetrics(reg)
	popts.WrapTransport = measured(clientMetrics, popts.WrapTransport)
	icfg.LabelProxied = true
	flt := newFaults(e.FaultInjection, clk, reg, logger)
	popts.WrapTransport = flt.podTransport(popts.WrapTransport)
	var itls *internalTLS
	if e.InternalTLS {
		// As upstream, plain HTTP stays on (:8012, :8013, probes to pods);
		// requests to pods go over TLS.
		logger.Info("Knative system-internal-tls is enabled")
		if itls, err = newInternalTLS(kube, e.SystemNamespace, transport, logger); err != nil {
			return err
		}
		popts.HTTPS = true
	}
	proxied := transport
	if itls != nil {
		proxied = itls.transport
	}
	px := proxy.New(proxied, logger.Named("proxy"), popts)

	thr := throttler.New(e.PodIP, throttler.Options{QueueDepth: e.QueueDepth, TotalQueueDepth: e.TotalQueueDepth}, clk, logger.Named("throttler"))
	metrics := activator.NewMetrics(reg)
	coldStarts := coldstart.NewTracker(coldstart.TrackerOptions{Routable: thr.Routable, Clock: clk, Registerer: reg,
		TracerProvider: icfg.TracerProvider})
	store := revisions.NewStore(serving, 0, logger.Named("revisions"))
	store.OnUpsert(func(i *revisions.Info) {
		thr.UpsertRevision(i.ID, throttler.RevisionConfig{ContainerConcurrency: i.ContainerConcurrency, QueueDepth: e.QueueDepth})
		// Requests buffered for a revision at zero that cannot start learn it now, not at their timeout.
		activator.FailIfCannotStart(thr, i)
	})
	store.OnDelete(func(id types.NamespacedName) {
		thr.DeleteRevision(id)
		metrics.DeleteRevision(id)
		clientMetrics.DeleteRevision(id.Namespace, id.Name)
		coldStarts.Forget(id)
	})
	epm := endpoints.NewManager(kube, store, podReadyTap{thr, coldStarts, clk}, endpoints.Options{
		ProbeTimeout:   e.ProbeTimeout,
		ProbeFrequency: e.ProbeFrequency,
		MeshMode:       meshMode,
		PassthroughLB:  passthrough,
		Transport:      flt.probeTransport(transport),
		Clock:          clk,
		Logger:         logger.Named("endpoints"),
	})

	autoscalerURL := statsink.URL(e.SystemNamespace, e.ClusterDomain)
	if e.autoscalerURL != "" {
		autoscalerURL = e.autoscalerURL
	}
	sink := statsink.New(autoscalerURL, statsink.Options{Registerer: reg, OnPokeSent: coldStarts.PokeSent}, clk, logger)
	reporter := concurrency.New(e.PodName, flt.sink(sink, clk), clk, reg)

	// Background owners: all stop with bgCtx, after the servers are down.
	bgCtx, bgCancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	start := func(fn func(context.Context)) {
		bg.Add(1)
		go func() { defer bg.Done(); fn(bgCtx) }()
	}
	defer func() { bgCancel(); bg.Wait() }()
	start(store.Run)
	start(epm.Run)
	if itls != nil {
		start(itls.watcher.Run)
	}
	start(sink.Run)
	start(reporter.Run)
	profiling := observability.NewProfiling(obsCfg.RuntimeProfiling)
	requestLog := activator.NewRequestLogger(os.Stdout)
	applyObservability(obsCfg, profiling, requestLog, logger)

	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	// The ConfigMap watches run with the background owners; they have applied the cluster's values
	// before the servers start.
	if err := cmwatch.Watch(syncCtx, bgCtx, kube, e.SystemNamespace,
		configWatches(e, logger, level, profiling, requestLog, metricsExport, flt)...); err != nil {
		syncCancel()
		return err
	}
	if !store.WaitForSync(syncCtx) || !epm.WaitForSync(syncCtx) || (itls != nil && !itls.watcher.WaitForSync(syncCtx)) {
		syncCancel()
		return fmt.Errorf("informers did not sync within a minute")
	}
	syncCancel()
	if itls != nil {
		// Upstream exits here; Thaw serves plain HTTP and refuses TLS
		// handshakes until the Secret is there (the store logged why).
		if _, err := itls.store.GetCertificate(nil); err != nil {
			logger.Errorw("system-internal-tls is enabled but there is no certificate to serve yet", zap.Error(err))
		}
	}

	ds := &drainState{}
	acfg := activator.Config{
		Throttler:     thr,
		Proxy:         px,
		IsNotSent:     func(err error) bool { return errors.Is(err, proxy.ErrNotSent) },
		Reporter:      reporter,
		QueueDepth:    e.QueueDepth,
		PassthroughLB: passthrough,
		Routable:      thr.Routable, // fail fast for revisions that cannot start
		Clock:         clk,
		Logger:        logger,
	}
	if itls != nil {
		acfg.InternalTLS = &e.tlsPorts
	}
	icfg.Metrics, icfg.RequestLog, icfg.ColdStarts = metrics, requestLog, coldStarts
	// Outermost first, as upstream layers its handlers: probes (draining fails kubelet's), the
	// revision lookup, the instrumentation that measures what activation does, activation.
	handler := activator.Probes(ds.Health,
		activator.LookupRevision(store, e.ClusterDomain, logger,
			activator.Instrument(icfg, activator.NewHandler(acfg))))

	servers := []namedServer{
		{name: "http1", srv: dataServer(e.http1Addr, handler)},
		{name: "h2c", srv: dataServer(e.h2cAddr, handler)},
		{name: "metrics", srv: metricsSrv},
		{name: "profile", srv: observability.NewProfilingServer(":"+strconv.Itoa(e.ProfilingPort), profiling)},
	}
	if itls != nil {
		servers = append(servers, namedServer{name: "https", srv: httpsServer(e.httpsAddr, handler, itls.server)})
	}
	logger.Infow("Starting the activator", "podIP", e.PodIP, "queueDepth", e.QueueDepth, "drainTimeout", e.DrainTimeout)

	sigCtx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	// In-flight requests get up to the pod's termination grace (600s upstream), counted from SIGTERM.
	return serve(sigCtx, servers, ds, e.DrainTimeout, terminationGrace, clk, logger)
}

// dataServer is an :8012/:8013 server: HTTP/1.1 and prior-knowledge h2c.
func dataServer(addr string, h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Addr: addr, Handler: h, Protocols: p, ReadHeaderTimeout: time.Minute}
}
