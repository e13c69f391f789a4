package coldstart

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/types"
)

// RecorderOptions configure a Recorder; zero values take the defaults.
type RecorderOptions struct {
	// Ring receives completed records (NewRing(DefaultRingSize) if nil).
	Ring *Ring
	// Registerer receives thaw_autoscaler_coldstart_phase_seconds; nil
	// leaves it unregistered.
	Registerer prometheus.Registerer
	// TracerProvider, when set, gets a "coldstart" span per cold start.
	TracerProvider trace.TracerProvider
	MaxAge         time.Duration
	MaxOpen        int
}

// Recorder follows the autoscaler's side of cold starts: a record opens
// when a poke is accepted for a revision at desired scale 0 (or, without a
// poke, at the decision that takes it above 0: a periodic stat woke it),
// notes the first decision above 0, and completes when the /scale patch
// from 0 returns OK; completed records go to the Ring. At most one record
// per revision is open; it is replaced by the next scale from zero, and
// dropped when the revision's PA is deleted or after MaxAge. Methods are
// safe for concurrent use; times are passed in by the callers, which own
// the clock.
type Recorder struct {
	opts   RecorderOptions
	hist   *prometheus.HistogramVec
	tracer trace.Tracer

	mu   sync.Mutex
	open map[types.NamespacedName]*scaleStart
}

type scaleStart struct {
	rec    ScaleRecord
	opened time.Time
	span   trace.Span
}

// NewRecorder returns a Recorder.
func NewRecorder(opts RecorderOptions) *Recorder {
	if opts.Ring == nil {
		opts.Ring = NewRing(DefaultRingSize)
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = DefaultMaxOpen
	}
	r := &Recorder{
		opts: opts,
		hist: newHistogram("autoscaler", opts.Registerer),
		open: map[types.NamespacedName]*scaleStart{},
	}
	if opts.TracerProvider != nil {
		r.tracer = opts.TracerProvider.Tracer(tracerInstrumentor)
	}
	return r
}

// Ring returns the ring of completed records.
func (r *Recorder) Ring() *Ring { return r.opts.Ring }

// PokeReceived opens a record for key: a poke received at at was accepted
// while its desired scale was 0. An open record still waiting for its
// decision keeps its earlier poke; one already decided is stale (the
// revision went back to 0 without a patch from 0) and is replaced.
func (r *Recorder) PokeReceived(key types.NamespacedName, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.open[key]; s != nil {
		if s.rec.Decided.IsZero() && at.Sub(s.opened) <= r.opts.MaxAge {
			return
		}
		r.dropLocked(key, s, "superseded")
	}
	if s := r.openLocked(key, at); s != nil {
		s.rec.PokeReceived = at
		if s.span != nil {
			s.span.AddEvent(EventPokeReceived, trace.WithTimestamp(at))
		}
	}
}

// Decided notes that key's desired scale went from 0 to desired at at. It
// completes the decision of an open record waiting for one, or opens a
// record without a poke.
func (r *Recorder) Decided(key types.NamespacedName, at time.Time, desired int32) {
	if desired <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.open[key]
	if s != nil && (!s.rec.Decided.IsZero() || at.Sub(s.opened) > r.opts.MaxAge) {
		r.dropLocked(key, s, "superseded")
		s = nil
	}
	if s == nil {
		if s = r.openLocked(key, at); s == nil {
			return
		}
	}
	s.rec.Decided = at
	if s.span != nil {
		s.span.AddEvent(EventDecided, trace.WithTimestamp(at), trace.WithAttributes(attribute.Int("desired", int(desired))))
	}
}

// openLocked adds an open record for key at at, or returns nil when
// MaxOpen records are open and none has expired.
func (r *Recorder) openLocked(key types.NamespacedName, at time.Time) *scaleStart {
	if len(r.open) >= r.opts.MaxOpen {
		for k, s := range r.open {
			if at.Sub(s.opened) > r.opts.MaxAge {
				r.dropLocked(k, s, "expired")
			}
		}
		if len(r.open) >= r.opts.MaxOpen {
			return nil
		}
	}
	s := &scaleStart{rec: ScaleRecord{Namespace: key.Namespace, Revision: key.Name}, opened: at}
	if r.tracer != nil {
		_, s.span = r.tracer.Start(context.Background(), spanName, trace.WithTimestamp(at), trace.WithAttributes(
			attribute.String("kn.revision.name", key.Name),
			attribute.String("k8s.namespace.name", key.Namespace),
		))
	}
	r.open[key] = s
	return s
}

// ScaleWritten completes key's open record: the /scale patch from 0 to
// desired returned OK at at. Without an open record (a scale from zero no
// decision asked for, e.g. a min-scale change) it does nothing.
func (r *Recorder) ScaleWritten(key types.NamespacedName, at time.Time, desired int32) {
	r.mu.Lock()
	s := r.open[key]
	if s == nil {
		r.mu.Unlock()
		return
	}
	delete(r.open, key)
	r.mu.Unlock()

	s.rec.ScaleWritten, s.rec.DesiredScale = at, desired
	observe(r.hist, PhaseDecide, s.rec.PokeReceived, s.rec.Decided)
	observe(r.hist, PhaseScale, s.rec.Decided, at)
	if !s.rec.Decided.IsZero() {
		r.hist.WithLabelValues(PhasePaced).Observe(s.rec.PacedSeconds)
	}
	observe(r.hist, PhaseTotal, s.rec.PokeReceived, at)
	if s.span != nil {
		s.span.AddEvent(EventScaleWritten, trace.WithTimestamp(at), trace.WithAttributes(attribute.Int("desired", int(desired))))
		s.span.End(trace.WithTimestamp(at))
	}
	r.opts.Ring.Add(s.rec)
}

// PokedAt returns when key's open record began: its poke, or without one
// its decision. The wake-up pacer orders scale-ups from zero by it.
func (r *Recorder) PokedAt(key types.NamespacedName) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.open[key]
	switch {
	case s == nil:
		return time.Time{}, false
	case !s.rec.PokeReceived.IsZero():
		return s.rec.PokeReceived, true
	case !s.rec.Decided.IsZero():
		return s.rec.Decided, true
	}
	return time.Time{}, false
}

// Paced notes that key's scale from zero waited d for pod-start capacity.
func (r *Recorder) Paced(key types.NamespacedName, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.open[key]; s != nil {
		s.rec.PacedSeconds = d.Seconds()
		if s.span != nil {
			s.span.SetAttributes(attribute.Float64("paced_seconds", d.Seconds()))
		}
	}
}

// Forget drops key's open record (its PA was deleted).
func (r *Recorder) Forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.open[key]; s != nil {
		r.dropLocked(key, s, "deleted")
	}
}

// Open returns the number of open records.
func (r *Recorder) Open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

func (r *Recorder) dropLocked(key types.NamespacedName, s *scaleStart, why string) {
	delete(r.open, key)
	if s.span != nil {
		s.span.SetStatus(codes.Error, why)
		s.span.End()
	}
}
