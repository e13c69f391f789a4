package observability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Tracing is the tracer provider and propagator built from Config; a nil
// *Tracing means tracing is off.
type Tracing struct {
	Provider   *sdktrace.TracerProvider
	Propagator propagation.TextMapPropagator
}

// Identity names this process in traces and metrics.
type Identity struct {
	Service, PodName, Namespace string
	// Version is service.version (upstream: the commit its image was built from).
	Version string
}

// NewTracing builds tracing for cfg, or returns nil when tracing-protocol is
// none. stdout writes spans to out (os.Stdout in the binary).
func NewTracing(ctx context.Context, cfg *Config, id Identity, out io.Writer) (*Tracing, error) {
	var exp sdktrace.SpanExporter
	var err error
	switch cfg.TracingProtocol {
	case ProtocolNone, "":
		return nil, nil
	case ProtocolStdout:
		exp, err = stdouttrace.New(stdouttrace.WithWriter(out))
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if ep, err := endpointURL(cfg.TracingEndpoint); err == nil && ep != "" && !envEndpoint("TRACES") {
			opts = append(opts, otlptracegrpc.WithEndpointURL(ep))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case ProtocolHTTP:
		var opts []otlptracehttp.Option
		if ep, err := endpointURL(cfg.TracingEndpoint); err == nil && ep != "" && !envEndpoint("TRACES") {
			opts = append(opts, otlptracehttp.WithEndpointURL(ep))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("tracing-protocol: unsupported value %q", cfg.TracingProtocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing exporter %s: %w", cfg.TracingProtocol, err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(Resource(id)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.TracingSamplingRate))),
	)
	return &Tracing{
		Provider:   tp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}

// endpointURL reads an OTLP endpoint as upstream does: a URL, or a bare host:port, which means TLS
// (https). Upstream's parse also rejects an IP:port without a scheme; so does this.
func endpointURL(e string) (string, error) {
	u, err := url.Parse(e)
	if err != nil {
		return "", err
	}
	if u.Opaque != "" {
		return "https://" + e, nil
	}
	return e, nil
}

// envEndpoint reports whether the OTel environment names an endpoint, which then wins over
// config-observability (as upstream).
func envEndpoint(signal string) bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}

// WrapTransport adds a client span and trace propagation to rt.
func (t *Tracing) WrapTransport(rt http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(rt,
		otelhttp.WithTracerProvider(t.Provider),
		otelhttp.WithPropagators(t.Propagator),
		// Metrics are Prometheus instruments of our own.
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.URL.Path == "" {
				return r.Method + " /"
			}
			return r.Method + " " + r.URL.Path
		}),
	)
}

// Shutdown flushes and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.Provider.Shutdown(ctx)
}
