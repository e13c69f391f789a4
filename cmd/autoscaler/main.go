// Command autoscaler is Thaw's drop-in for Knative Serving's autoscaler.
//
// Always, on every replica: the websocket stat server (:8080, which also
// answers the kubelet's probes), the Prometheus endpoint (:9090), pprof on
// :8008 while config-observability enables runtime profiling, and live
// watches of config-autoscaler, config-deployment, config-network,
// config-logging and config-observability.
//
// While this replica holds the Lease autoscaler-bucket-00-of-01: the
// informers, the Metric reconciler with the collector and its queue-proxy
// scrapers, the deciders, and the KPA reconciler. Stats that arrive while
// not leading are dropped and counted (a single bucket: the activators reach
// the leader through the autoscaler Service once it is the only ready pod).
package main

import (
	"context"
	"errors"
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
)

const component = "autoscaler"

type config struct {
	kubeconfig, server     string
	qps                    float64
	burst                  int
	scaleQPS               float64
	scaleBurst             int
	statsAddr, metricsAddr string
	profilingAddr          string
	podName, podIP, ns     string
	loggingName, obsName   string
	shutdownTimeout        time.Duration
}

func main() {
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
	flag.StringVar(&cfg.statsAddr, "stats-addr", ":8080", "Address of the websocket stat server and the probes.")
	flag.StringVar(&cfg.metricsAddr, "metrics-addr", ":9090", "Address of the Prometheus metrics endpoint.")
	flag.StringVar(&cfg.profilingAddr, "profiling-addr", ":8008", "Address of pprof (served while config-observability enables it); empty disables.")
	flag.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 5*time.Second, "Bound on a graceful shutdown.")
	flag.Parse()
	cfg.podName, cfg.podIP = os.Getenv("POD_NAME"), os.Getenv("POD_IP")
	cfg.ns = envOr("SYSTEM_NAMESPACE", "knative-serving")
	cfg.loggingName = envOr("CONFIG_LOGGING_NAME", "config-logging")
	cfg.obsName = envOr("CONFIG_OBSERVABILITY_NAME", "config-observability")

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
	if err := checkIdentity(cfg); err != nil {
		logger.Errorw("Refusing to start", zap.Error(err))
		os.Exit(1)
	}
	if err := run(ctx, cfg, deps, nil, logger, level); err != nil {
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
	cm, getErr := kube.CoreV1().ConfigMaps(cfg.ns).Get(gctx, cfg.loggingName, metav1.GetOptions{})
	var (
		lc       *pkglogging.Config
		parseErr error
	)
	if getErr == nil {
		lc, parseErr = pkglogging.NewConfigFromConfigMap(cm)
	}
	if getErr != nil || parseErr != nil {
		logger, level := pkglogging.NewLogger("", "info")
		logger = logger.Named(component)
		if getErr != nil && !apierrors.IsNotFound(getErr) {
			logger.Warnw("Cannot read the logging ConfigMap; logging at info", "configmap", cfg.loggingName, zap.Error(getErr))
		} else if parseErr != nil {
			logger.Errorw("Invalid logging ConfigMap; logging at info", "configmap", cfg.loggingName, zap.Error(parseErr))
		}
		return logger, level
	}
	return pkglogging.NewLoggerFromConfig(lc, component)
}

// checkIdentity validates the Lease holder identity <POD_NAME>_<POD_IP>:
// a loopback IP would name an address no other replica can reach.
func checkIdentity(cfg config) error {
	if cfg.podName == "" || cfg.podIP == "" {
		return errors.New("POD_NAME and POD_IP must be set (downward API): they make the Lease holder identity")
	}
	ip := net.ParseIP(cfg.podIP)
	if ip == nil {
		return fmt.Errorf("POD_IP %q is not an IP address", cfg.podIP)
	}
	if ip.IsLoopback() {
		return fmt.Errorf("%w (POD_IP=%s)", errLoopbackIP, cfg.podIP)
	}
	return nil
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
	rc.UserAgent = "thaw-" + component
	return rc, nil
}

// buildDeps makes the generated clientsets from the REST configuration.
func buildDeps(cfg config) (deps, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return deps{}, fmt.Errorf("API configuration: %w", err)
	}
	var d deps
	if d.Kube, err = kubernetes.NewForConfig(rc); err != nil {
		return deps{}, err
	}
	if d.Serving, err = servingclientset.NewForConfig(rc); err != nil {
		return deps{}, err
	}
	if d.Networking, err = netclientset.NewForConfig(rc); err != nil {
		return deps{}, err
	}
	// The dynamic client only patches /scale; it gets its own limiter.
	src := rest.CopyConfig(rc)
	src.QPS, src.Burst, src.RateLimiter = float32(cfg.scaleQPS), cfg.scaleBurst, nil
	if d.Dynamic, err = dynamic.NewForConfig(src); err != nil {
		return deps{}, err
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
