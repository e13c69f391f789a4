// Command autoscaler is Thaw's drop-in for Knative Serving's autoscaler: flags, environment, API
// clients and the logger, wired into pkg/autoscaler/lifecycle, which runs the process (stat server, buckets,
// forwarding between replicas, informers, reconcilers).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	pkglogging "knative.dev/pkg/logging"
	servingclientset "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/thaw-dev/thaw/pkg/autoscaler/lifecycle"
	"github.com/thaw-dev/thaw/pkg/faultinject"
	"github.com/thaw-dev/thaw/pkg/observability"
)

type config struct {
	kubeconfig, server string
	qps                float64
	burst              int
	scaleQPS           float64
	scaleBurst         int
	lifecycle.Config
}

func main() {
	// Before any API call or workqueue: client-go takes its metrics providers once.
	observability.KubernetesMetrics()
	cfg := config{}
	flag.StringVar(&cfg.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "Path to a kubeconfig; empty means in-cluster.")
	flag.StringVar(&cfg.server, "server", "", "Address of the Kubernetes API server; overrides the kubeconfig.")
	// Upstream runs two controllers and doubles client-go's defaults (5, 10).
	flag.Float64Var(&cfg.qps, "kube-api-qps", envFloat("KUBE_API_QPS", 2*float64(rest.DefaultQPS)), "Maximum QPS to the API server.")
	flag.IntVar(&cfg.burst, "kube-api-burst", int(envFloat("KUBE_API_BURST", float64(2*rest.DefaultBurst))), "Maximum burst to the API server.")
	// /scale patches have a budget of their own: a burst of cold starts
	// must not queue behind status and event writes (upstream shares one).
	flag.Float64Var(&cfg.scaleQPS, "scale-api-qps", envFloat("SCALE_API_QPS", 50), "Maximum QPS of /scale patches, apart from --kube-api-qps.")
	flag.IntVar(&cfg.scaleBurst, "scale-api-burst", int(envFloat("SCALE_API_BURST", 100)), "Maximum burst of /scale patches, apart from --kube-api-burst.")
	flag.StringVar(&cfg.StatsAddr, "stats-addr", ":8080", "Address of the websocket stat server and the probes.")
	flag.StringVar(&cfg.MetricsAddr, "metrics-addr", ":9090", "Address of the Prometheus metrics endpoint.")
	flag.StringVar(&cfg.ProfilingAddr, "profiling-addr", ":8008", "Address of pprof (served while config-observability enables it); empty disables.")
	flag.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 5*time.Second, "Bound on a graceful shutdown.")
	flag.Parse()
	cfg.PodName, cfg.PodIP = os.Getenv("POD_NAME"), os.Getenv("POD_IP")
	cfg.Namespace = envOr("SYSTEM_NAMESPACE", "knative-serving")
	cfg.LoggingName = envOr("CONFIG_LOGGING_NAME", "config-logging")
	cfg.ObservabilityName = envOr("CONFIG_OBSERVABILITY_NAME", "config-observability")
	cfg.ServiceName = lifecycle.Component
	cfg.FaultInjection = os.Getenv(faultinject.EnvVar)
	// Peers listen where this replica does.
	if _, port, err := net.SplitHostPort(cfg.StatsAddr); err == nil {
		cfg.StatPort, _ = strconv.Atoi(port)
	}
	if _, port, err := net.SplitHostPort(cfg.MetricsAddr); err == nil {
		cfg.MetricsPort, _ = strconv.Atoi(port)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	deps, err := buildDeps(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoscaler: Kubernetes clients:", err)
		os.Exit(1)
	}
	// The logger is built from config-logging as it is at startup, as
	// upstream's; afterwards only its level follows the ConfigMap.
	logger, level := newLogger(ctx, deps.Kube, cfg)
	defer func() { _ = logger.Sync() }()
	if err := lifecycle.CheckIdentity(cfg.PodName, cfg.PodIP); err != nil {
		logger.Errorw("Refusing to start", zap.Error(err))
		os.Exit(1)
	}
	if err := lifecycle.Run(ctx, cfg.Config, deps, nil, logger, level); err != nil {
		logger.Errorw("Autoscaler failed", zap.Error(err))
		os.Exit(1)
	}
}

// newLogger builds the logger from config-logging (zap-logger-config and
// loglevel.autoscaler); without it, or when it is unreadable, production
// JSON at info.
func newLogger(ctx context.Context, kube kubernetes.Interface, cfg config) (*zap.SugaredLogger, zap.AtomicLevel) {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cm, getErr := kube.CoreV1().ConfigMaps(cfg.Namespace).Get(gctx, cfg.LoggingName, metav1.GetOptions{})
	var (
		lc       *pkglogging.Config
		parseErr error
	)
	if getErr == nil {
		lc, parseErr = pkglogging.NewConfigFromConfigMap(cm)
	}
	if getErr != nil || parseErr != nil {
		logger, level := pkglogging.NewLogger("", "info")
		logger = logger.Named(lifecycle.Component)
		if getErr != nil && !apierrors.IsNotFound(getErr) {
			logger.Warnw("Cannot read the logging ConfigMap; logging at info", "configmap", cfg.LoggingName, zap.Error(getErr))
		} else if parseErr != nil {
			logger.Errorw("Invalid logging ConfigMap; logging at info", "configmap", cfg.LoggingName, zap.Error(parseErr))
		}
		return logger, level
	}
	return pkglogging.NewLoggerFromConfig(lc, lifecycle.Component)
}

// restConfig builds the API server configuration from the flags, or the
// in-cluster one when neither flag is set.
func restConfig(cfg config) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if cfg.kubeconfig == "" && cfg.server == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags(cfg.server, cfg.kubeconfig)
	}
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = float32(cfg.qps), cfg.burst
	rc.UserAgent = "thaw-" + lifecycle.Component
	return rc, nil
}

// buildDeps makes the generated clientsets from the REST configuration.
func buildDeps(cfg config) (lifecycle.Deps, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return lifecycle.Deps{}, fmt.Errorf("API configuration: %w", err)
	}
	var d lifecycle.Deps
	if d.Kube, err = kubernetes.NewForConfig(rc); err != nil {
		return lifecycle.Deps{}, err
	}
	if d.Serving, err = servingclientset.NewForConfig(rc); err != nil {
		return lifecycle.Deps{}, err
	}
	if d.Networking, err = netclientset.NewForConfig(rc); err != nil {
		return lifecycle.Deps{}, err
	}
	// The dynamic client only patches /scale; it gets its own limiter.
	src := rest.CopyConfig(rc)
	src.QPS, src.Burst, src.RateLimiter = float32(cfg.scaleQPS), cfg.scaleBurst, nil
	if d.Dynamic, err = dynamic.NewForConfig(src); err != nil {
		return lifecycle.Deps{}, err
	}
	return d, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && v > 0 {
		return v
	}
	return def
}
