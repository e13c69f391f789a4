// Command autoscaler is Thaw's drop-in for Knative Serving's autoscaler.
//
// This build wires the stat path only: the websocket stat server (:8080)
// feeds the per-revision collector and pokes the multiscaler, and the
// Prometheus endpoint (:9090) exports the deciders' gauges and the drop
// counters. The Metric and KPA reconcilers, which create the collections and
// deciders, the queue-proxy scraper, the ready-pod counter, leader election
// with bucket leases and stat forwarding are not wired yet: until they are,
// every received stat is counted as a stat of an unknown revision.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/collector"
	"github.com/thaw-dev/thaw/pkg/multiscaler"
	"github.com/thaw-dev/thaw/pkg/statserver"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// statsQueue bounds the stats between the stat server and the collector, as
// upstream's statsCh does; a full queue pushes back on the sockets.
const statsQueue = 1000

type config struct {
	kubeconfig, server     string
	statsAddr, metricsAddr string
	podName, podIP, ns     string
	shutdownTimeout        time.Duration
}

func main() {
	cfg := config{}
	flag.StringVar(&cfg.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "Path to a kubeconfig; empty means in-cluster.")
	flag.StringVar(&cfg.server, "server", "", "Address of the Kubernetes API server; overrides the kubeconfig.")
	flag.StringVar(&cfg.statsAddr, "stats-addr", ":8080", "Address of the websocket stat server.")
	flag.StringVar(&cfg.metricsAddr, "metrics-addr", ":9090", "Address of the Prometheus metrics endpoint.")
	flag.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 5*time.Second, "Bound on a graceful shutdown.")
	flag.Parse()
	cfg.podName, cfg.podIP, cfg.ns = os.Getenv("POD_NAME"), os.Getenv("POD_IP"), os.Getenv("SYSTEM_NAMESPACE")

	zl, err := zap.NewProduction()
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoscaler: logger:", err)
		os.Exit(1)
	}
	logger := zl.Sugar().Named("autoscaler")
	defer func() { _ = logger.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil, logger); err != nil {
		logger.Errorw("Autoscaler failed", zap.Error(err))
		os.Exit(1)
	}
}

// restConfig builds the API server configuration from the flags, or the
// in-cluster one when neither flag is set.
func restConfig(cfg config) (*rest.Config, error) {
	if cfg.kubeconfig == "" && cfg.server == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags(cfg.server, cfg.kubeconfig)
}

// noPods is the ready-pod counter until the KPA reconciler provides one:
// every revision counts as not found (0 pods).
func noPods(key types.NamespacedName) (int, error) {
	return 0, apierrors.NewNotFound(schema.GroupResource{Resource: "endpoints"}, key.Name)
}

// run serves until ctx ends. ready, if not nil, receives the bound stat and
// metrics addresses once both listen.
func run(ctx context.Context, cfg config, ready chan<- [2]string, logger *zap.SugaredLogger) error {
	if cfg.ns == "" {
		cfg.ns = "knative-serving"
		logger.Warnw("SYSTEM_NAMESPACE is not set; using the default", "namespace", cfg.ns)
	}
	logger = logger.With("pod", cfg.podName, "podIP", cfg.podIP, "namespace", cfg.ns)
	if rc, err := restConfig(cfg); err != nil {
		// Nothing uses the API server until the reconcilers are wired.
		logger.Warnw("No Kubernetes API configuration; the reconcilers are not wired in this build anyway", zap.Error(err))
	} else {
		logger.Infow("Kubernetes API configured; the reconcilers are not wired in this build", "host", rc.Host)
	}

	clk := clock.RealClock{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	coll := collector.New(collector.Options{Clock: clk, Logger: logger.Named("collector")})
	defer coll.Close()
	ms := multiscaler.New(multiscaler.Options{
		Clock:   clk,
		Metrics: coll,
		Pods:    multiscaler.PodCounterFunc(noPods),
		Logger:  logger.Named("multiscaler"),
		Inform: func(key types.NamespacedName) {
			logger.Debugw("Decision changed", "key", key.String())
		},
	})
	reg.MustRegister(coll, ms)

	statsLn, err := net.Listen("tcp", cfg.statsAddr)
	if err != nil {
		return fmt.Errorf("stat server: %w", err)
	}
	metricsLn, err := net.Listen("tcp", cfg.metricsAddr)
	if err != nil {
		statsLn.Close()
		return fmt.Errorf("metrics server: %w", err)
	}

	stats := make(chan wire.StatMessage, statsQueue)
	ss := statserver.New(cfg.statsAddr, stats, statserver.Options{Registerer: reg}, clk, logger)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 3)
	done := make(chan struct{})
	go func() { errs <- ms.Run(runCtx) }()
	go func() { errs <- ss.Serve(statsLn) }()
	go func() {
		if err := metricsSrv.Serve(metricsLn); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("metrics server: %w", err)
			return
		}
		errs <- nil
	}()
	// The consumer: every stat goes to its revision's windows, then may
	// trigger an immediate decision for a revision scaled to zero. The stat
	// server has stamped a zero Timestamp with its receipt time.
	go func() {
		defer close(done)
		for {
			select {
			case <-runCtx.Done():
				return
			case sm := <-stats:
				coll.Record(sm.Key, time.Unix(sm.Stat.Timestamp, 0), sm.Stat)
				ms.Poke(sm.Key, sm.Stat)
			}
		}
	}()
	if ready != nil {
		ready <- [2]string{statsLn.Addr().String(), metricsLn.Addr().String()}
	}
	logger.Infow("Autoscaler serving", "stats", statsLn.Addr().String(), "metrics", metricsLn.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
		// A server ended on its own: shut the rest down.
	}

	sctx, scancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer scancel()
	// The stat server first, so that activators reconnect elsewhere (1012)
	// while the consumer still drains the queue.
	if err := ss.Shutdown(sctx); err != nil {
		logger.Warnw("Stat server shutdown", zap.Error(err))
	}
	cancel()
	<-done
	if err := metricsSrv.Shutdown(sctx); err != nil {
		logger.Warnw("Metrics server shutdown", zap.Error(err))
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return nil
}
