package coldstart

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Defaults for TrackerOptions and RecorderOptions.
const (
	// DefaultMaxAge bounds how long a cold start stays open: one that has
	// not finished by then is dropped, and a request arriving later starts
	// a new one.
	DefaultMaxAge = 10 * time.Minute
	// DefaultMaxOpen bounds the open cold starts (one per revision); beyond
	// it, cold requests still get their own timeline but no shared phases.
	DefaultMaxOpen = 4096
)

// Span event names.
const (
	EventPokeSent      = "poke_sent"
	EventPodReady      = "pod_ready"
	EventFirstByte     = "first_byte"
	EventPokeReceived  = "poke_received"
	EventDecided       = "decided"
	EventScaleWritten  = "scale_written"
	spanName           = "coldstart"
	tracerInstrumentor = "github.com/thaw-dev/thaw/pkg/coldstart"
)

// TrackerOptions configure a Tracker. Routable is required.
type TrackerOptions struct {
	// Routable reports whether this activator has a pod to route rev's
	// requests to. It is asked once per request, so it must be cheap.
	Routable func(rev types.NamespacedName) bool
	Clock    clock.PassiveClock
	// Registerer receives thaw_activator_coldstart_phase_seconds; nil
	// leaves it unregistered.
	Registerer prometheus.Registerer
	// TracerProvider, when set, gets a "coldstart" span per cold start.
	TracerProvider trace.TracerProvider
	MaxAge         time.Duration
	MaxOpen        int
}

// Tracker follows the cold starts of one activator. A cold start of a
// revision opens when a request arrives while the revision has no routable
// pod here; requests arriving before it ends join it. It ends at the first
// byte written to any of its requests, when its last request ends without
// one, when the revision is deleted, or after MaxAge. Methods are safe for
// concurrent use.
type Tracker struct {
	opts   TrackerOptions
	hist   *prometheus.HistogramVec
	tracer trace.Tracer

	mu   sync.Mutex
	open map[types.NamespacedName]*coldStart
}

// coldStart is one open cold start; its fields are guarded by Tracker.mu.
type coldStart struct {
	rev                  types.NamespacedName
	arrival, poke, ready time.Time
	refs                 int // requests that joined and have not ended
	closed               bool
	span                 trace.Span // nil without tracing
}

// NewTracker returns a Tracker.
func NewTracker(opts TrackerOptions) *Tracker {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = DefaultMaxOpen
	}
	t := &Tracker{
		opts: opts,
		hist: newHistogram("activator", opts.Registerer),
		open: map[types.NamespacedName]*coldStart{},
	}
	if opts.TracerProvider != nil {
		t.tracer = opts.TracerProvider.Tracer(tracerInstrumentor)
	}
	return t
}

// Request is one cold request's handle. nil (a warm request) is valid and
// does nothing.
type Request struct {
	t       *Tracker
	cs      *coldStart // nil when MaxOpen was reached
	arrival time.Time
	// done: FirstByte was recorded; ended: End was called. Guarded by t.mu.
	done, ended bool
}

// Arrive is called when a request for rev arrives, before anything can poke
// the autoscaler for it (so the poke cannot be sent before the cold start
// is open). It returns nil when rev has a routable pod: the warm path costs
// one Routable call. ctx carries the parent span of the "coldstart" span.
func (t *Tracker) Arrive(ctx context.Context, rev types.NamespacedName) *Request {
	if t.opts.Routable(rev) {
		return nil
	}
	now := t.opts.Clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.open[rev]
	if cs != nil && now.Sub(cs.arrival) > t.opts.MaxAge {
		t.abandonLocked(cs, "expired")
		cs = nil
	}
	if cs == nil {
		if len(t.open) >= t.opts.MaxOpen {
			t.sweepLocked(now)
		}
		if len(t.open) >= t.opts.MaxOpen {
			return &Request{t: t, arrival: now}
		}
		cs = &coldStart{rev: rev, arrival: now}
		if t.tracer != nil {
			_, cs.span = t.tracer.Start(ctx, spanName, trace.WithTimestamp(now), trace.WithAttributes(
				attribute.String("kn.revision.name", rev.Name),
				attribute.String("k8s.namespace.name", rev.Namespace),
			))
		}
		t.open[rev] = cs
	}
	cs.refs++
	return &Request{t: t, cs: cs, arrival: now}
}

// sweepLocked drops cold starts older than MaxAge.
func (t *Tracker) sweepLocked(now time.Time) {
	for _, cs := range t.open {
		if now.Sub(cs.arrival) > t.opts.MaxAge {
			t.abandonLocked(cs, "expired")
		}
	}
}

// abandonLocked ends cs without observing it.
func (t *Tracker) abandonLocked(cs *coldStart, why string) {
	if cs.closed {
		return
	}
	cs.closed = true
	if t.open[cs.rev] == cs {
		delete(t.open, cs.rev)
	}
	if cs.span != nil {
		cs.span.SetStatus(codes.Error, why)
		cs.span.End()
	}
}

// PokeSent records that the poke for rev was written to the autoscaler at
// at. Only the first poke of an open cold start counts.
func (t *Tracker) PokeSent(rev types.NamespacedName, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cs := t.open[rev]; cs != nil && cs.poke.IsZero() && !at.Before(cs.arrival) {
		cs.poke = at
		if cs.span != nil {
			cs.span.AddEvent(EventPokeSent, trace.WithTimestamp(at))
		}
	}
}

// PodReady records that the first healthy pod of rev was handed to the
// throttler at at.
func (t *Tracker) PodReady(rev types.NamespacedName, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cs := t.open[rev]; cs != nil && cs.ready.IsZero() && !at.Before(cs.arrival) {
		cs.ready = at
		if cs.span != nil {
			cs.span.AddEvent(EventPodReady, trace.WithTimestamp(at))
		}
	}
}

// Forget drops rev's open cold start (the revision was deleted).
func (t *Tracker) Forget(rev types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cs := t.open[rev]; cs != nil {
		t.abandonLocked(cs, "revision deleted")
	}
}

// Open returns the number of open cold starts.
func (t *Tracker) Open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// FirstByte records that the response to r started, from pod, and returns
// r's timeline. The first FirstByte of a cold start ends it and observes
// its phases; later calls for r return the same timeline without
// recording.
func (r *Request) FirstByte(pod string) ActivatorTimeline {
	t := r.t
	now := t.opts.Clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	tl := ActivatorTimeline{Arrival: r.arrival, FirstByte: now, Pod: pod}
	cs := r.cs
	if cs != nil {
		tl.PokeSent, tl.PodReady = cs.poke, cs.ready
	}
	if r.done {
		return tl
	}
	r.done = true
	if cs == nil || cs.closed {
		return tl
	}
	cs.closed = true
	if t.open[cs.rev] == cs {
		delete(t.open, cs.rev)
	}
	// The cold start's own phases run from its first request's arrival.
	observe(t.hist, PhasePoke, cs.arrival, cs.poke)
	observe(t.hist, PhasePodReady, cs.poke, cs.ready)
	observe(t.hist, PhaseFirstByte, cs.ready, now)
	observe(t.hist, PhaseTotal, cs.arrival, now)
	if cs.span != nil {
		cs.span.AddEvent(EventFirstByte, trace.WithTimestamp(now), trace.WithAttributes(attribute.String("pod", pod)))
		cs.span.End(trace.WithTimestamp(now))
	}
	return tl
}

// End is called when r's request ends. The last request of a cold start
// ending without a first byte (errors, timeouts, clients gone) drops it.
func (r *Request) End() {
	if r == nil || r.cs == nil {
		return
	}
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if r.ended {
		return
	}
	r.ended = true
	r.cs.refs--
	if r.cs.refs <= 0 {
		t.abandonLocked(r.cs, "no response")
	}
}

// Writer wraps w so that the response's first byte (status line, body,
// flush or hijack) calls FirstByte(pod) and, if setHeader, sets
// ResponseHeader before anything is written. Informational 1xx responses
// other than 101 pass through unmarked.
func (r *Request) Writer(w http.ResponseWriter, pod string, setHeader bool) http.ResponseWriter {
	return &firstByteWriter{w: w, req: r, pod: pod, set: setHeader}
}

type firstByteWriter struct {
	w      http.ResponseWriter
	req    *Request
	pod    string
	set    bool
	marked bool
}

var (
	_ http.Flusher  = (*firstByteWriter)(nil)
	_ http.Hijacker = (*firstByteWriter)(nil)
)

func (f *firstByteWriter) mark() {
	if f.marked {
		return
	}
	f.marked = true
	tl := f.req.FirstByte(f.pod)
	if f.set {
		f.w.Header().Set(ResponseHeader, tl.Header())
	}
}

func (f *firstByteWriter) Header() http.Header { return f.w.Header() }

func (f *firstByteWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		f.mark()
	}
	f.w.WriteHeader(code)
}

func (f *firstByteWriter) Write(p []byte) (int, error) {
	f.mark()
	return f.w.Write(p)
}

func (f *firstByteWriter) FlushError() error {
	f.mark()
	return http.NewResponseController(f.w).Flush()
}

func (f *firstByteWriter) Flush() { _ = f.FlushError() }

func (f *firstByteWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	f.mark()
	return http.NewResponseController(f.w).Hijack()
}

// Unwrap lets http.ResponseController reach deadlines and full duplex.
func (f *firstByteWriter) Unwrap() http.ResponseWriter { return f.w }
