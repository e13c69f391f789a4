package observability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Tracing is the tracer provider and propagator built from Config; a nil
// *Tracing means tracing is off.
type Tracing struct {
	Provider   *sdktrace.TracerProvider
	Propagator propagation.TextMapPropagator
}

// Identity names this process in traces.
type Identity struct {
	Service, PodName, Namespace string
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
		opts := []otlptracegrpc.Option{otlptracegrpc.WithInsecure()}
		if cfg.TracingEndpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpointURL(cfg.TracingEndpoint)))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case ProtocolHTTP:
		opts := []otlptracehttp.Option{}
		if cfg.TracingEndpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(endpointURL(cfg.TracingEndpoint)))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("tracing-protocol: unsupported value %q", cfg.TracingProtocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing exporter %s: %w", cfg.TracingProtocol, err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", id.Service),
		attribute.String("k8s.pod.name", id.PodName),
		attribute.String("k8s.namespace.name", id.Namespace),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.TracingSamplingRate))),
	)
	return &Tracing{
		Provider:   tp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}

// endpointURL accepts a bare host:port as upstream's config does.
func endpointURL(e string) string {
	if strings.Contains(e, "://") {
		return e
	}
	return "http://" + e
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
