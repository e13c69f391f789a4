package activator

import (
	"context"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/observability"
)

// InstrumentConfig is what the instrumentation needs; every field is optional.
type InstrumentConfig struct {
	// Metrics are the request metrics; nil: unregistered ones.
	Metrics *Metrics
	// RequestLog, if set, logs each request from its template.
	RequestLog *RequestLogger
	// ColdStarts, if set, times the requests that arrive while their
	// revision has no routable pod, and answers coldstart.RequestHeader.
	ColdStarts *coldstart.Tracker
	// LabelProxied puts the revision's labels in each proxied request's context
	// (observability.WithRevisionLabels), for the client metrics of the proxy's transport.
	LabelProxied bool
	// TracerProvider and Propagator enable tracing when TracerProvider is non-nil.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Clock measures the request durations; nil: the real clock.
	Clock clock.PassiveClock
}

// Instrument measures each request next activates: the server duration and body size histograms and
// the queued/active gauges (Metrics), one request log line, the tracing spans (handle, throttler_try,
// activator_proxy) and the cold-start timing. It must sit between LookupRevision and the activation
// handler: it labels everything with the revision found, and activation reports to it, through the
// request's context, when the request waits, reaches a pod and ends. A request without a revision
// passes through unmeasured.
func Instrument(cfg InstrumentConfig, next http.Handler) http.Handler {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	in := &instrument{cfg: cfg, next: next}
	if cfg.TracerProvider != nil {
		in.tracer = cfg.TracerProvider.Tracer("knative.dev/serving/pkg/activator")
	}
	return in
}

type instrument struct {
	cfg    InstrumentConfig
	tracer trace.Tracer // nil: tracing off
	next   http.Handler
}

// observation is one request's instrumentation, kept in its requestState. The zero value (a request
// that was not instrumented) does nothing.
type observation struct {
	in *instrument // nil: not instrumented
	// queuedG and activeG are the revision's gauges, nil when it was deleted before the request came.
	queuedG, activeG prometheus.Gauge
	labels           observability.RevisionLabels
	labelProxied     bool
	cold             *coldstart.Request
	timing           bool
	trySpan          trace.Span
	// status and size are the answer's, as the activation handler wrote it.
	status, size int
}

func (in *instrument) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := stateFrom(r.Context())
	if st == nil {
		in.next.ServeHTTP(w, r)
		return
	}
	info := st.info
	obs := &st.obs
	obs.in = in
	start := in.cfg.Clock.Now()
	ctx := r.Context()
	var span trace.Span
	if in.tracer != nil {
		if in.cfg.Propagator != nil {
			ctx = in.cfg.Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
		}
		ctx, span = in.tracer.Start(ctx, "handle", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.String("kn.service.name", info.Service),
			attribute.String("kn.configuration.name", info.Configuration),
			attribute.String("kn.revision.name", info.ID.Name),
			attribute.String("k8s.namespace.name", info.ID.Namespace),
		))
		r = r.WithContext(ctx)
	}
	// The gauges are made only while the revision is live: once its deletion is handled, a request
	// that looked it up just before must not bring them back for good.
	if info.Hold() {
		m := in.cfg.Metrics
		obs.queuedG = m.queued.WithLabelValues(info.ID.Namespace, info.ID.Name)
		obs.activeG = m.active.WithLabelValues(info.ID.Namespace, info.ID.Name)
		info.Release()
	}
	if in.cfg.LabelProxied {
		obs.labelProxied = true
		obs.labels = observability.RevisionLabels{
			Service: info.Service, Configuration: info.Configuration, Revision: info.ID.Name, Namespace: info.ID.Namespace}
	}

	// The opt-in header is ours: the pod never sees it. Read straight from
	// the map (the name is canonical) to keep the warm path cheap.
	_, timing := r.Header[coldstart.RequestHeader]
	if timing {
		timing = r.Header.Get(coldstart.RequestHeader) != ""
		r.Header.Del(coldstart.RequestHeader)
	}
	obs.timing = timing
	// Before activation's concurrency reporter sees the request, so its poke cannot be written
	// before the cold start is open.
	if in.cfg.ColdStarts != nil {
		obs.cold = in.cfg.ColdStarts.Arrive(ctx, info.ID)
		defer obs.cold.End()
	}
	if timing && obs.cold == nil {
		w.Header().Set(coldstart.ResponseHeader, coldstart.Warm)
	}

	defer func() {
		// Deferred so an aborted response (panic) is still counted.
		code := obs.status
		if code == 0 {
			code = http.StatusOK
		}
		latency := in.cfg.Clock.Since(start).Seconds()
		// Not for a revision deleted meanwhile: the observation would bring its series back for good.
		if info.Hold() {
			scheme, host, port := serverLabels(r)
			lv := []string{methodLabel(r.Method), strconv.Itoa(code), "http", protoVersion(r),
				scheme, host, port, info.Service, info.Configuration, info.ID.Name, info.ID.Namespace}
			m := in.cfg.Metrics
			m.duration.WithLabelValues(lv...).Observe(latency)
			// The request body's declared length (otelhttp counts what is read; the same but for
			// chunked uploads, which count 0 here).
			m.reqSize.WithLabelValues(lv...).Observe(float64(max(r.ContentLength, 0)))
			m.respSize.WithLabelValues(lv...).Observe(float64(obs.size))
			info.Release()
		}
		if in.cfg.RequestLog.enabled() {
			in.cfg.RequestLog.write(&RequestLogInput{
				Request:  r,
				Response: &RequestLogResponse{Code: code, Size: obs.size, Latency: latency},
				Revision: &RequestLogRevision{Name: info.ID.Name, Namespace: info.ID.Namespace,
					Service: info.Service, Configuration: info.Configuration},
				TraceID: traceID(r.Header),
			})
		}
		if span != nil {
			span.SetAttributes(attribute.Int("http.response.status_code", code))
			if code >= 500 {
				span.SetStatus(codes.Error, http.StatusText(code))
			}
			span.End()
		}
	}()
	in.next.ServeHTTP(w, r)
}

// queued is called when the request starts waiting for capacity; it returns the context to wait in.
func (o *observation) queued(ctx context.Context) context.Context {
	if o.in == nil {
		return ctx
	}
	if o.queuedG != nil {
		o.queuedG.Inc()
	}
	if o.in.tracer != nil {
		ctx, o.trySpan = o.in.tracer.Start(ctx, "throttler_try")
	}
	return ctx
}

// dequeued is called once the request stops waiting: with nil when it got a pod, else with why not.
func (o *observation) dequeued(err error) {
	if o.in == nil {
		return
	}
	if o.queuedG != nil {
		o.queuedG.Dec()
	}
	if o.trySpan != nil {
		if err != nil {
			o.trySpan.SetStatus(codes.Error, err.Error())
		}
		o.trySpan.End()
	}
}

// proxying is called for each attempt at the pod dest; it returns the writer and request to proxy
// with, and the attempt's span (nil unless tracing) to hand to proxied when the attempt ends. A cold
// request's writer marks its first byte (and sets the timing header if asked).
func (o *observation) proxying(w http.ResponseWriter, r *http.Request, dest string) (http.ResponseWriter, *http.Request, trace.Span) {
	if o.in == nil {
		return w, r, nil
	}
	if o.activeG != nil {
		o.activeG.Inc()
	}
	var span trace.Span
	if o.in.tracer != nil {
		var ctx context.Context
		ctx, span = o.in.tracer.Start(r.Context(), "activator_proxy", trace.WithAttributes(attribute.String("dest", dest)))
		r = r.WithContext(ctx)
	}
	if o.labelProxied {
		r = r.WithContext(observability.WithRevisionLabels(r.Context(), o.labels))
	}
	if o.cold != nil {
		w = o.cold.Writer(w, dest, o.timing)
	}
	return w, r, span
}

// proxied ends an attempt proxying began.
func (o *observation) proxied(span trace.Span) {
	if o.in == nil {
		return
	}
	if span != nil {
		span.End()
	}
	if o.activeG != nil {
		o.activeG.Dec()
	}
}

// done records the status and size of the answer (0, 0 when nothing was written: a 200).
func (o *observation) done(status, size int) {
	o.status, o.size = status, size
}
