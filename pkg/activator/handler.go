// Package activator is the activator's HTTP data plane, layered as upstream's: Probes answers kubelet
// and network probes, LookupRevision finds the request's revision, Instrument measures the request
// (metrics, request log, tracing, cold-start timing) and the handler of NewHandler activates it:
// concurrency reporting, revision timeouts, waiting for capacity in the throttler and proxying to a pod.
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

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
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

// IsKubeletProbe reports whether r is a kubelet probe.
func IsKubeletProbe(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("User-Agent"), KubeProbeUAPrefix) || r.Header.Get(KubeletProbeHeader) != ""
}

// Probes answers kubelet probes on any path (readiness and liveness: 500 with health's error once it
// returns one, i.e. while draining; nil health: always healthy) and network probes, and hands every
// other request to next. Readiness deliberately ignores the autoscaler connection (#6529).
func Probes(health func() error, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsKubeletProbe(r) {
			if health != nil {
				if err := health(); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
			}
			w.WriteHeader(http.StatusOK)
			return
		}
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
		next.ServeHTTP(w, r)
	})
}

// requestState is what the layers below LookupRevision share about one request, carried in its
// context: one value, so the chain adds one context and request copy per request, not one per layer.
type requestState struct {
	info *revisions.Info
	// obs is the instrumentation's view of the request; its zero value (not instrumented) does nothing.
	obs observation
}

type stateKey struct{}

// stateContext is a request's context carrying its requestState, allocated as one object. Done, Err
// and the cancellation context.WithCancel looks up come from the embedded parent, so deriving from it
// costs what deriving from the parent does.
type stateContext struct {
	context.Context
	st requestState
}

func (c *stateContext) Value(key any) any {
	if key == (stateKey{}) {
		return &c.st
	}
	return c.Context.Value(key)
}

func stateFrom(ctx context.Context) *requestState {
	s, _ := ctx.Value(stateKey{}).(*requestState)
	return s
}

// LookupRevision finds the request's revision (Knative-Serving-Revision/-Namespace headers, or the
// Host under clusterDomain, default cluster.local) and passes it to next in the request's context;
// an unknown revision gets 404, a failed lookup 500.
func LookupRevision(revs RevisionGetter, clusterDomain string, logger *zap.SugaredLogger, next http.Handler) http.Handler {
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := revisions.FromRequest(r, clusterDomain)
		var info *revisions.Info
		if err == nil {
			info, err = revs.Get(id.Namespace, id.Name)
		}
		if err != nil {
			msg := "Error getting active endpoint: " + err.Error()
			if errors.Is(err, revisions.ErrNotFound) {
				logger.Debugw("Unknown revision", "revision", id.String(), zap.Error(err))
				http.Error(w, msg, http.StatusNotFound)
				return
			}
			logger.Errorw("Error getting revision", "revision", id.String(), zap.Error(err))
			http.Error(w, msg, http.StatusInternalServerError)
			return
		}
		next.ServeHTTP(w, r.WithContext(&stateContext{Context: r.Context(), st: requestState{info: info}}))
	})
}

// Config is what activation needs. Throttler, Proxy and Logger are required.
type Config struct {
	Throttler Throttler
	Proxy     Proxier
	// IsNotSent classifies a Proxy error as never having reached the pod.
	IsNotSent func(error) bool
	// Reporter counts requests per revision; nil disables reporting.
	Reporter *concurrency.Reporter
	// InternalTLS, if set (config-network system-internal-tls), sends each
	// request to its pod's (or private Service's) TLS port, with the revision's
	// namespace in the context for the dial's SAN check; the Proxy must speak TLS.
	InternalTLS *internaltls.Ports
	// PassthroughLB (config-network enable-mesh-pod-addressability) sends the
	// private service as Host with K-Passthrough-Lb, for meshes.
	PassthroughLB bool
	// QueueDepth bounds each revision's waiting requests; 0: the throttler's default.
	QueueDepth int
	// Routable, if set, enables failing fast: a request for a revision whose Info says it cannot start
	// (revisions.Info.CannotStart) and that has no routable pod here gets 503 with the reason and
	// Retry-After at once, instead of waiting for its timeout. The request is still counted, so the
	// autoscaler keeps trying to start the revision and requests recover as soon as it can.
	Routable func(types.NamespacedName) bool
	// Clock runs the revision timeouts; nil: the real clock.
	Clock  clock.Clock
	Logger *zap.SugaredLogger
}

// NewHandler returns the activation handler: concurrency reporting, timeouts, throttling and
// proxying of a request whose revision LookupRevision found (one without gets 500).
func NewHandler(cfg Config) http.Handler {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.IsNotSent == nil {
		cfg.IsNotSent = func(error) bool { return false }
	}
	return &handler{cfg: cfg}
}

type handler struct {
	cfg Config
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := stateFrom(r.Context())
	if st == nil {
		// A wiring mistake, not a client's: say so once per request rather than crash.
		h.cfg.Logger.Error("Activation handler reached without a revision: LookupRevision must come first")
		http.Error(w, "no revision for the request", http.StatusInternalServerError)
		return
	}
	info := st.info
	if info.FullDuplex {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			h.cfg.Logger.Debugw("Unable to enable full duplex", zap.Error(err))
		}
	}
	// Counted from arrival to completion, queue time included.
	if h.cfg.Reporter != nil {
		tok := h.cfg.Reporter.Begin(info.ID, concurrency.Labels{Service: info.Service, Configuration: info.Configuration})
		defer tok.End()
	}
	to := Timeouts{Total: info.Timeout, ResponseStart: info.ResponseStartTimeout, Idle: info.IdleTimeout}
	status, size, abort := serveWithTimeouts(w, r, to, h.cfg.Clock, func(w http.ResponseWriter, r *http.Request) {
		h.activate(w, r, st)
	})
	// Before a panic: the instrumentation above still counts an aborted response.
	st.obs.done(status, size)
	if abort {
		panic(http.ErrAbortHandler)
	}
}

// activate waits for capacity and proxies. A panic in the proxy (an aborted
// response copy) is re-raised only after Try returned, so the throttler
// always gets its capacity back.
func (h *handler) activate(w http.ResponseWriter, r *http.Request, st *requestState) {
	info, obs := st.info, &st.obs
	rev := info.ID
	// The revision's throttler entry is made only while it is live: once its deletion is handled, a
	// request that looked it up just before must not bring it back for good.
	if !info.Hold() {
		h.writeTryError(w, r, rev, throttler.ErrRevisionDeleted)
		return
	}
	h.cfg.Throttler.UpsertRevision(rev, throttler.RevisionConfig{ContainerConcurrency: info.ContainerConcurrency, QueueDepth: h.cfg.QueueDepth})
	info.Release()
	if info.CannotStart != "" && h.cfg.Routable != nil && !h.cfg.Routable(rev) {
		h.writeTryError(w, r, rev, &CannotStartError{Revision: rev, Reason: info.CannotStart})
		return
	}
	tryCtx := obs.queued(r.Context())
	dequeued := false
	var panicked any
	err := h.cfg.Throttler.Try(tryCtx, rev, func(dest string) (err error) {
		if !dequeued {
			dequeued = true
			obs.dequeued(nil)
		}
		pw, pr, span := obs.proxying(w, r, dest)
		defer obs.proxied(span)
		defer func() {
			if p := recover(); p != nil {
				panicked = p
				err = nil
			}
		}()
		target := proxy.Target{Dest: dest, H2C: info.H2C}
		if h.cfg.InternalTLS != nil {
			target.Dest = h.cfg.InternalTLS.Secure(dest)
			pr = pr.WithContext(internaltls.WithNamespace(pr.Context(), info.ID.Namespace))
		}
		if h.cfg.PassthroughLB {
			target.PassthroughHost = info.ID.Name + "-private." + info.ID.Namespace
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
		obs.dequeued(err)
	}
	if panicked != nil {
		panic(panicked)
	}
	if err == nil {
		return
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
