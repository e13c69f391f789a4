package activator

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestTracingSpansAndPropagation(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	var proxied trace.SpanContext
	p := funcProxy(func(w http.ResponseWriter, r *http.Request, _ string) error {
		proxied = trace.SpanContextFromContext(r.Context())
		io.WriteString(w, "ok")
		return nil
	})
	h := newTestHandler(t, &fakeThrottler{dests: []string{"pod"}}, p, func(c *testConfig) {
		c.TracerProvider, c.Propagator = tp, prop
	})

	// The caller's trace context comes in as W3C traceparent.
	parent, span := tp.Tracer("client").Start(context.Background(), "client")
	req := revRequest(http.MethodGet)
	prop.Inject(parent, propagation.HeaderCarrier(req.Header))
	h.ServeHTTP(httptest.NewRecorder(), req)
	span.End()

	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = s
	}
	for _, name := range []string{"handle", "throttler_try", "activator_proxy"} {
		s, ok := byName[name]
		if !ok {
			t.Fatalf("no %q span; got %v", name, byName)
		}
		if s.SpanContext().TraceID() != span.SpanContext().TraceID() {
			t.Errorf("%s is not in the caller's trace", name)
		}
	}
	if byName["handle"].Parent().SpanID() != span.SpanContext().SpanID() {
		t.Error("handle is not a child of the caller's span")
	}
	if byName["activator_proxy"].Parent().SpanID() != byName["handle"].SpanContext().SpanID() {
		t.Error("activator_proxy is not a child of handle")
	}
	if proxied.SpanID() != byName["activator_proxy"].SpanContext().SpanID() {
		t.Error("the proxy did not get the activator_proxy span context to propagate")
	}
}
