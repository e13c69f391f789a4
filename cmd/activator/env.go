package main

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/faultinject"
)

// env is upstream's activator environment plus Thaw's own knobs.
type env struct {
	PodName, PodIP           string
	SystemNamespace          string
	ClusterDomain            string // "" → from /etc/resolv.conf
	MaxIdleProxyConns        int
	MaxIdleProxyConnsPerHost int
	ProbeTimeout             time.Duration
	ProbeFrequency           time.Duration
	ConfigLoggingName        string
	ConfigObservabilityName  string
	// QueueDepth bounds each revision's waiting requests (ACTIVATOR_QUEUE_DEPTH).
	QueueDepth int
	// TotalQueueDepth bounds the waiting requests of all revisions, shared fairly between the revisions
	// queuing (ACTIVATOR_TOTAL_QUEUE_DEPTH; 0: the throttler's default).
	TotalQueueDepth int
	// ProfilingPort (PROFILING_PORT) and MetricsAddr
	// (METRICS_PROMETHEUS_HOST:METRICS_PROMETHEUS_PORT) as knative.dev/pkg reads them.
	ProfilingPort int
	MetricsAddr   string
	// DrainTimeout is how long the activator keeps serving after SIGTERM
	// while readiness fails (DRAIN_TIMEOUT, upstream's 45s).
	DrainTimeout time.Duration
	// FaultInjection is THAW_FAULT_INJECTION, the deploy-time switch of fault injection (see newFaults).
	FaultInjection string

	// InternalTLS is config-network's system-internal-tls, read once at start
	// as upstream reads it (not an environment variable): HTTPS on httpsAddr
	// and TLS to queue-proxy. The ACTIVATOR_TLS_* variables apply only then.
	InternalTLS bool

	// Fixed in production; tests move them to loopback.
	http1Addr, h2cAddr string
	httpsAddr          string
	tlsPorts           internaltls.Ports
	autoscalerURL      string // "" → statsink.URL(SystemNamespace, ClusterDomain)
}

// loadEnv reads the environment through getenv; every invalid value is an error naming it.
func loadEnv(getenv func(string) string) (*env, error) {
	e := &env{
		PodName:                 getenv("POD_NAME"),
		PodIP:                   getenv("POD_IP"),
		SystemNamespace:         getenv("SYSTEM_NAMESPACE"),
		ClusterDomain:           getenv("CLUSTER_DOMAIN"),
		ConfigLoggingName:       getenv("CONFIG_LOGGING_NAME"),
		ConfigObservabilityName: getenv("CONFIG_OBSERVABILITY_NAME"),
		FaultInjection:          getenv(faultinject.EnvVar),
		http1Addr:               ":8012",
		h2cAddr:                 ":8013",
		httpsAddr:               ":" + strconv.Itoa(internaltls.PodHTTPSPort),
		tlsPorts:                internaltls.DefaultPorts,
	}
	if e.PodName == "" {
		return nil, fmt.Errorf("POD_NAME is required")
	}
	if e.PodIP == "" {
		return nil, fmt.Errorf("POD_IP is required")
	}
	if e.SystemNamespace == "" {
		e.SystemNamespace = "knative-serving"
	}
	if e.ConfigLoggingName == "" {
		e.ConfigLoggingName = "config-logging"
	}
	if e.ConfigObservabilityName == "" {
		e.ConfigObservabilityName = "config-observability"
	}
	ints := []struct {
		name string
		dst  *int
		def  int
	}{
		{"MAX_IDLE_PROXY_CONNS", &e.MaxIdleProxyConns, 1000},
		{"MAX_IDLE_PROXY_CONNS_PER_HOST", &e.MaxIdleProxyConnsPerHost, 100},
		{"ACTIVATOR_QUEUE_DEPTH", &e.QueueDepth, 0},
		{"ACTIVATOR_TOTAL_QUEUE_DEPTH", &e.TotalQueueDepth, 0},
		{"PROFILING_PORT", &e.ProfilingPort, 8008},
	}
	for _, i := range ints {
		*i.dst = i.def
		if v := getenv(i.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("invalid %s %q: want a non-negative integer", i.name, v)
			}
			*i.dst = n
		}
	}
	metricsPort := 9090
	if v := getenv("METRICS_PROMETHEUS_PORT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("invalid METRICS_PROMETHEUS_PORT %q: want a port number", v)
		}
		metricsPort = n
	}
	e.MetricsAddr = net.JoinHostPort(getenv("METRICS_PROMETHEUS_HOST"), strconv.Itoa(metricsPort))
	var err error
	if e.ProbeTimeout, e.ProbeFrequency, err = endpoints.ProbeSettingsFromEnv(getenv); err != nil {
		return nil, err
	}
	e.DrainTimeout = 45 * time.Second
	if v := getenv("DRAIN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("invalid DRAIN_TIMEOUT %q: want a duration like 45s", v)
		}
		e.DrainTimeout = d
	}
	return e, nil
}
