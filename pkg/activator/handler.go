// Package activator is the activator's HTTP data plane: kubelet and network
// probes, revision lookup, concurrency reporting, revision timeouts, and the
// activation step that waits for capacity in the throttler and proxies the
// request to a pod.
package activator

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/observability"
)

// Probe headers and values (wire contract with kubelet, ingress and autoscaler).
const (
	KubeletProbeHeader = "K-Kubelet-Probe"
	KubeProbeUAPrefix  = "kube-probe/"
	NetworkProbeHeader = "K-Network-Probe"
	NetworkHashHeader  = "K-Network-Hash"
	// NetworkProbeValue asks for the ingress readiness echo of the hash.
	NetworkProbeValue = "probe"
	// Name answers "K-Network-Probe: activator".
	Name = "activator"
)

// QueueFullBody is the body of the 503 answered when a revision's queue is full.
const QueueFullBody = "pending request queue full"

// CannotStartRetryAfter is the Retry-After, in seconds, of the 503 for a revision that cannot start:
// short, since the revision may recover (an image pushed, a node added) at any moment.
const CannotStartRetryAfter = 5

// CannotStartError answers a request for a revision at zero that cannot become ready. The Throttler's
// waiters get it when the Revision reports the failure (see Throttler.FailWaiting).
type CannotStartError struct {
	Revision types.NamespacedName
	// Reason is revisions.Info.CannotStart.
	Reason string
}

func (e *CannotStartError) Error() string {
	return fmt.Sprintf("revision %s cannot start: %s", e.Revision, e.Reason)
}

// Throttler waits for capacity of a revision and calls fn with a pod address.
type Throttler interface {
	// UpsertRevision is called before each Try with the revision's current
	// config (cheap when unchanged), so a request never races the informer
	// callback that registers a new revision. It is called only while the
	// revision is held live (revisions.Info.Hold), never after its deletion
	// was handled.
	UpsertRevision(rev types.NamespacedName, cfg throttler.RevisionConfig)
	Try(ctx context.Context, rev types.NamespacedName, fn func(dest string) error) error
}

// RevisionGetter looks revisions up; errors wrap revisions.ErrNotFound for
// unknown ones.
type RevisionGetter interface {
	Get(namespace, name string) (*revisions.Info, error)
}

// Proxier sends a request to a pod. It returns an error wrapping
// proxy.ErrNotSent (and writes nothing) when the pod was never reached.
type Proxier interface {
	Serve(w http.ResponseWriter, r *http.Request, t proxy.Target) error
}

// Config wires the handler. Throttler, Revisions, Proxy and Logger are required.
type Config struct {
	Throttler Throttler
	Revisions RevisionGetter
	Proxy     Proxier
	// IsNotSent classifies a Proxy error as never having reached the pod.
	IsNotSent func(error) bool
	// Reporter counts requests per revision; nil disables reporting.
	Reporter *concurrency.Reporter
	// Health returns an error once the activator drains; nil: always healthy.
	// Readiness deliberately ignores the autoscaler connection (#6529).
	Health func() error
	// InternalTLS, if set (config-network system-internal-tls), sends each
	// request to its pod's (or private Service's) TLS port, with the revision's
	// namespace in the context for the dial's SAN check; the Proxy must speak TLS.
	InternalTLS *internaltls.Ports
	// PassthroughLB (config-network enable-mesh-pod-addressability) sends the
	// private service as Host with K-Passthrough-Lb, for meshes.
	PassthroughLB bool
	// QueueDepth bounds each revision's waiting requests; 0: the throttler's default.
	QueueDepth    int
	ClusterDomain string
	Clock         clock.Clock
	Metrics       *Metrics
	// RequestLog, if set, logs each proxied request from its template.
	RequestLog *RequestLogger
	// Routable, if set, enables failing fast: a request for a revision whose Info says it cannot start
	// (revisions.Info.CannotStart) and that has no routable pod here gets 503 with the reason and
	// Retry-After at once, instead of waiting for its timeout. The request is still counted, so the
	// autoscaler keeps trying to start the revision and requests recover as soon as it can.
	Routable func(types.NamespacedName) bool
	// ColdStarts, if set, times the requests that arrive while their
	// revision has no routable pod, and answers coldstart.RequestHeader.
	ColdStarts *coldstart.Tracker
	// LabelProxied puts the revision's labels in each proxied request's context
	// (observability.WithRevisionLabels), for the client metrics of the proxy's transport.
	LabelProxied bool
	// TracerProvider and Propagator enable tracing when non-nil.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	Logger         *zap.SugaredLogger
}

// NewHandler builds the handler chain, outermost first: kubelet probes,
// network probes, revision lookup, then the request handler (tracing span,
// metrics, concurrency reporting, timeouts, throttling, proxying).
func NewHandler(cfg Config) http.Handler {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.IsNotSent == nil {
		cfg.IsNotSent = func(error) bool { return false }
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return &handler{cfg: cfg, tracer: tp.Tracer("knative.dev/serving/pkg/activator")}
}

type handler struct {
	cfg    Config
	tracer trace.Tracer
}

// IsKubeletProbe reports whether r is a kubelet probe.
func IsKubeletProbe(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("User-Agent"), KubeProbeUAPrefix) || r.Header.Get(KubeletProbeHeader) != ""
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Kubelet probes on any path: readiness and liveness.
	if IsKubeletProbe(r) {
		if h.cfg.Health != nil {
			if err := h.cfg.Health(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	// Network probes.
	switch v := r.Header.Get(NetworkProbeHeader); v {
	case "":
		r.Header.Del(NetworkHashHeader)
	case NetworkProbeValue:
		hash := r.Header.Get(NetworkHashHeader)
		if hash == "" {
			http.Error(w, fmt.Sprintf("a probe request must contain a non-empty %q header", NetworkHashHeader), http.StatusBadRequest)
			return
		}
		w.Header().Set(NetworkHashHeader, hash)
		w.WriteHeader(http.StatusOK)
		return
	case Name:
		io.WriteString(w, Name)
		return
	default:
		http.Error(w, fmt.Sprintf("unexpected probe header value: %q", html.EscapeString(v)), http.StatusBadRequest)
		return
	}

	// Revision lookup.
	id, err := revisions.FromRequest(r, h.cfg.ClusterDomain)
	var info *revisions.Info
	if err == nil {
		info, err = h.cfg.Revisions.Get(id.Namespace, id.Name)
	}
	if err != nil {
		msg := "Error getting active endpoint: " + err.Error()
		if errors.Is(err, revisions.ErrNotFound) {
			h.cfg.Logger.Debugw("Unknown revision", "revision", id.String(), zap.Error(err))
			http.Error(w, msg, http.StatusNotFound)
			return
		}
		h.cfg.Logger.Errorw("Error getting revision", "revision", id.String(), zap.Error(err))
		http.Error(w, msg, http.StatusInternalServerError)
		return
	}
	h.serveRevision(w, r, info)
}

func (h *handler) serveRevision(w http.ResponseWriter, r *http.Request, info *revisions.Info) {
	start := h.cfg.Clock.Now()
	ctx := r.Context()
	var span trace.Span
	if h.cfg.TracerProvider != nil {
		if h.cfg.Propagator != nil {
			ctx = h.cfg.Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
		}
		ctx, span = h.tracer.Start(ctx, "handle", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.String("kn.service.name", info.Service),
			attribute.String("kn.configuration.name", info.Configuration),
			attribute.String("kn.revision.name", info.ID.Name),
			attribute.String("k8s.namespace.name", info.ID.Namespace),
		))
		r = r.WithContext(ctx)
	}
	if info.FullDuplex {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			h.cfg.Logger.Debugw("Unable to enable full duplex", zap.Error(err))
		}
	}

	// The opt-in header is ours: the pod never sees it. Read straight from
	// the map (the name is canonical) to keep the warm path cheap.
	_, timing := r.Header[coldstart.RequestHeader]
	if timing {
		timing = r.Header.Get(coldstart.RequestHeader) != ""
		r.Header.Del(coldstart.RequestHeader)
	}
	// Before the reporter sees the request, so its poke cannot be written
	// before the cold start is open.
	var cold *coldstart.Request
	if h.cfg.ColdStarts != nil {
		cold = h.cfg.ColdStarts.Arrive(ctx, info.ID)
		defer cold.End()
	}
	if timing && cold == nil {
		w.Header().Set(coldstart.ResponseHeader, coldstart.Warm)
	}

	var status, size int
	defer func() {
		// Deferred so an aborted response (panic) is still counted.
		code := status
		if code == 0 {
			code = http.StatusOK
		}
		latency := h.cfg.Clock.Since(start).Seconds()
		// Not for a revision deleted meanwhile: the observation would bring its series back for good.
		if info.Hold() {
			scheme, host, port := serverLabels(r)
			lv := []string{methodLabel(r.Method), strconv.Itoa(code), "http", protoVersion(r),
				scheme, host, port, info.Service, info.Configuration, info.ID.Name, info.ID.Namespace}
			h.cfg.Metrics.duration.WithLabelValues(lv...).Observe(latency)
			// The request body's declared length (otelhttp counts what is read; the same but for
			// chunked uploads, which count 0 here).
			h.cfg.Metrics.reqSize.WithLabelValues(lv...).Observe(float64(max(r.ContentLength, 0)))
			h.cfg.Metrics.respSize.WithLabelValues(lv...).Observe(float64(size))
			info.Release()
		}
		if h.cfg.RequestLog.enabled() {
			h.cfg.RequestLog.write(&RequestLogInput{
				Request:  r,
				Response: &RequestLogResponse{Code: code, Size: size, Latency: latency},
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

	// Counted from arrival to completion, queue time included.
	if h.cfg.Reporter != nil {
		tok := h.cfg.Reporter.Begin(info.ID, concurrency.Labels{Service: info.Service, Configuration: info.Configuration})
		defer tok.End()
	}

	to := Timeouts{Total: info.Timeout, ResponseStart: info.ResponseStartTimeout, Idle: info.IdleTimeout}
	var abort bool
	status, size, abort = serveWithTimeouts(w, r, to, h.cfg.Clock, func(w http.ResponseWriter, r *http.Request) {
		h.activate(w, r, info, cold, timing)
	})
	if abort {
		panic(http.ErrAbortHandler)
	}
}

// activate waits for capacity and proxies. A panic in the proxy (an aborted
// response copy) is re-raised only after Try returned, so the throttler
// always gets its capacity back. A cold request's writer marks its first
// byte (and sets the timing header if asked).
func (h *handler) activate(w http.ResponseWriter, r *http.Request, info *revisions.Info, cold *coldstart.Request, timing bool) {
	rev := info.ID
	// The revision's throttler entry and gauges are made only while it is live: once its deletion is
	// handled, a request that looked it up just before must not bring them back for good.
	if !info.Hold() {
		h.writeTryError(w, r, rev, throttler.ErrRevisionDeleted)
		return
	}
	queued := h.cfg.Metrics.queued.WithLabelValues(rev.Namespace, rev.Name)
	active := h.cfg.Metrics.active.WithLabelValues(rev.Namespace, rev.Name)
	h.cfg.Throttler.UpsertRevision(rev, throttler.RevisionConfig{ContainerConcurrency: info.ContainerConcurrency, QueueDepth: h.cfg.QueueDepth})
	info.Release()
	if info.CannotStart != "" && h.cfg.Routable != nil && !h.cfg.Routable(rev) {
		h.writeTryError(w, r, rev, &CannotStartError{Revision: rev, Reason: info.CannotStart})
		return
	}
	queued.Inc()
	dequeued := false

	tracing := h.cfg.TracerProvider != nil
	tryCtx, trySpan := r.Context(), trace.SpanFromContext(context.Background())
	if tracing {
		tryCtx, trySpan = h.tracer.Start(r.Context(), "throttler_try")
	}
	var panicked any
	err := h.cfg.Throttler.Try(tryCtx, rev, func(dest string) (err error) {
		if !dequeued {
			dequeued = true
			queued.Dec()
			trySpan.End()
		}
		active.Inc()
		defer active.Dec()
		defer func() {
			if p := recover(); p != nil {
				panicked = p
				err = nil
			}
		}()
		pr := r
		if tracing {
			proxyCtx, proxySpan := h.tracer.Start(r.Context(), "activator_proxy", trace.WithAttributes(attribute.String("dest", dest)))
			defer proxySpan.End()
			pr = r.WithContext(proxyCtx)
		}
		if h.cfg.LabelProxied {
			pr = pr.WithContext(observability.WithRevisionLabels(pr.Context(), observability.RevisionLabels{
				Service: info.Service, Configuration: info.Configuration, Revision: info.ID.Name, Namespace: info.ID.Namespace}))
		}
		target := proxy.Target{Dest: dest, H2C: info.H2C}
		if h.cfg.InternalTLS != nil {
			target.Dest = h.cfg.InternalTLS.Secure(dest)
			pr = pr.WithContext(internaltls.WithNamespace(pr.Context(), info.ID.Namespace))
		}
		if h.cfg.PassthroughLB {
			target.PassthroughHost = info.ID.Name + "-private." + info.ID.Namespace
		}
		pw := w
		if cold != nil {
			pw = cold.Writer(w, dest, timing)
		}
		if err := h.cfg.Proxy.Serve(pw, pr, target); err != nil {
			if h.cfg.IsNotSent(err) {
				return fmt.Errorf("%w: %w", throttler.ErrRetryable, err)
			}
			return err
		}
		return nil
	})
	if !dequeued {
		queued.Dec()
	}
	if panicked != nil {
		panic(panicked)
	}
	if err == nil {
		return
	}
	if !dequeued {
		trySpan.SetStatus(codes.Error, err.Error())
		trySpan.End()
	}
	h.writeTryError(w, r, rev, err)
}

// writeTryError answers a request that never got a pod. If a timeout already
// answered (504), the writer drops this.
func (h *handler) writeTryError(w http.ResponseWriter, r *http.Request, rev types.NamespacedName, err error) {
	var cannotStart *CannotStartError
	switch {
	case errors.As(err, &cannotStart):
		w.Header().Set("Retry-After", strconv.Itoa(CannotStartRetryAfter))
		http.Error(w, cannotStart.Error(), http.StatusServiceUnavailable)
	case errors.Is(err, throttler.ErrQueueFull):
		// Shed load at once so memory stays bounded; clients retry shortly.
		w.Header().Set("Retry-After", "1")
		http.Error(w, QueueFullBody, http.StatusServiceUnavailable)
	case errors.Is(err, throttler.ErrRevisionDeleted):
		// What a new request for the deleted revision gets too.
		http.Error(w, fmt.Sprintf("Error getting active endpoint: revision %s was deleted", rev), http.StatusNotFound)
	case errors.Is(err, throttler.ErrRetryable):
		// Every pod tried refused the connection.
		h.cfg.Logger.Warnw("No pod accepted the connection", "revision", rev.String(), zap.Error(err))
		http.Error(w, err.Error(), http.StatusBadGateway)
	case errors.Is(err, context.DeadlineExceeded):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	case r.Context().Err() != nil:
		// Client gone or timed out (504 already written): nothing to say.
		h.cfg.Logger.Debugw("Request ended while waiting for capacity", "revision", rev.String(), zap.Error(err))
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		h.cfg.Logger.Errorw("Throttler try error", "revision", rev.String(), zap.Error(err))
		w.WriteHeader(http.StatusInternalServerError)
	}
}
