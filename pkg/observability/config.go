// Package observability reads config-observability and sets up what it
// turns on: the Prometheus metrics endpoint, OTLP metrics export, runtime
// profiling and OpenTelemetry tracing.
package observability

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Protocols accepted in config-observability.
const (
	ProtocolNone       = "none"
	ProtocolPrometheus = "prometheus"
	ProtocolGRPC       = "grpc"
	ProtocolHTTP       = "http/protobuf"
	ProtocolStdout     = "stdout"
)

// Config is the part of config-observability the activator uses.
type Config struct {
	// MetricsProtocol is none, prometheus, grpc or http/protobuf. Thaw always
	// serves Prometheus on the metrics port whatever it says (NewMetricsServer);
	// grpc and http/protobuf also push OTLP to MetricsEndpoint (MetricsExporter).
	MetricsProtocol string
	MetricsEndpoint string
	// MetricsExportInterval is metrics-export-interval; 0 is the OTel SDK's
	// default (60 s, or OTEL_METRIC_EXPORT_INTERVAL).
	MetricsExportInterval time.Duration
	// TracingProtocol is none, grpc, http/protobuf or stdout.
	TracingProtocol     string
	TracingEndpoint     string
	TracingSamplingRate float64
	// RuntimeProfiling enables pprof on the profiling port.
	RuntimeProfiling bool
	// EnableRequestLog and RequestLogTemplate are upstream's request log keys.
	EnableRequestLog   bool
	RequestLogTemplate string
}

// Defaults returns upstream's defaults.
func Defaults() *Config {
	return &Config{MetricsProtocol: ProtocolNone, TracingProtocol: ProtocolNone}
}

// NewConfigFromMap parses config-observability data. Unknown keys are
// ignored; invalid values are errors naming the key.
func NewConfigFromMap(data map[string]string) (*Config, error) {
	c := Defaults()
	if v, ok := data["metrics-protocol"]; ok && v != "" {
		switch v {
		case ProtocolNone, ProtocolPrometheus, ProtocolGRPC, ProtocolHTTP:
			c.MetricsProtocol = v
		default:
			return nil, fmt.Errorf("metrics-protocol: unsupported value %q", v)
		}
	}
	c.MetricsEndpoint = data["metrics-endpoint"]
	if v, ok := data["metrics-export-interval"]; ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("metrics-export-interval: want a duration like 30s, got %q", v)
		}
		c.MetricsExportInterval = d
	}
	if v, ok := data["tracing-protocol"]; ok && v != "" {
		switch v {
		case ProtocolNone, ProtocolGRPC, ProtocolHTTP, ProtocolStdout:
			c.TracingProtocol = v
		default:
			return nil, fmt.Errorf("tracing-protocol: unsupported value %q", v)
		}
	}
	c.TracingEndpoint = data["tracing-endpoint"]
	if v, ok := data["tracing-sampling-rate"]; ok && v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			return nil, fmt.Errorf("tracing-sampling-rate: want a number in [0, 1], got %q", v)
		}
		c.TracingSamplingRate = f
	}
	if v, ok := data["runtime-profiling"]; ok && v != "" {
		switch strings.ToLower(v) {
		case "enabled":
			c.RuntimeProfiling = true
		case "disabled":
		default:
			return nil, fmt.Errorf("runtime-profiling: want enabled or disabled, got %q", v)
		}
	}
	for _, k := range []string{"logging.enable-request-log", "enable-request-log"} {
		if v, ok := data[k]; ok && v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			c.EnableRequestLog = b
		}
	}
	for _, k := range []string{"logging.request-log-template", "request-log-template"} {
		if v, ok := data[k]; ok {
			c.RequestLogTemplate = v
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// validate applies upstream's rules (knative.dev/pkg observability/metrics and tracing Config.Validate):
// OTLP needs an endpoint, none (and stdout) must not have one, and prometheus' endpoint is the
// host:port to listen on.
func (c *Config) validate() error {
	switch c.MetricsProtocol {
	case ProtocolGRPC, ProtocolHTTP:
		if c.MetricsEndpoint == "" {
			return fmt.Errorf("metrics-endpoint should be set when metrics-protocol is %q", c.MetricsProtocol)
		}
		if _, err := endpointURL(c.MetricsEndpoint); err != nil {
			return fmt.Errorf("metrics-endpoint: %w", err)
		}
	case ProtocolNone:
		if c.MetricsEndpoint != "" {
			return fmt.Errorf("metrics-endpoint should not be set when metrics-protocol is %q", c.MetricsProtocol)
		}
	case ProtocolPrometheus:
		if c.MetricsEndpoint != "" {
			if _, _, err := net.SplitHostPort(c.MetricsEndpoint); err != nil {
				return fmt.Errorf("metrics-endpoint %q for prometheus should be host:port", c.MetricsEndpoint)
			}
		}
	}
	switch c.TracingProtocol {
	case ProtocolGRPC, ProtocolHTTP:
		if c.TracingEndpoint == "" {
			return fmt.Errorf("tracing-endpoint should be set when tracing-protocol is %q", c.TracingProtocol)
		}
		if _, err := endpointURL(c.TracingEndpoint); err != nil {
			return fmt.Errorf("tracing-endpoint: %w", err)
		}
	case ProtocolNone, ProtocolStdout:
		if c.TracingEndpoint != "" {
			return fmt.Errorf("tracing-endpoint should not be set when tracing-protocol is %q", c.TracingProtocol)
		}
	}
	return nil
}
