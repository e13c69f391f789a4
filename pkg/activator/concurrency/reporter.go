// Package concurrency measures, per revision, how many requests the activator
// holds (queued or proxied) and how many arrive, and hands the autoscaler a
// report every second plus an immediate "poke" when an idle revision gets its
// first request, which is what starts a scale from zero.
package concurrency

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// ReportInterval is how often a batch is cut, as upstream.
const ReportInterval = time.Second

// Sink takes the reporter's messages. Neither method may block: the poke is
// sent from the request path.
type Sink interface {
	// Poke sends a first-request stat as soon as possible.
	Poke(wire.StatMessage)
	// Report hands over a periodic batch (one message per tracked revision).
	Report([]wire.StatMessage)
}

// Labels name a revision's owners for the concurrency gauge.
type Labels struct {
	Service, Configuration string
}

// Reporter tracks per-revision concurrency. It is safe for concurrent use.
type Reporter struct {
	podName string
	sink    Sink
	clk     clock.WithTicker
	gauge   *prometheus.GaugeVec

	mu   sync.RWMutex
	revs map[types.NamespacedName]*revStats
}

// revStats is the time-weighted concurrency of one revision over the current
// period: area is ∑ concurrency·seconds since the period began.
type revStats struct {
	mu         sync.Mutex
	inFlight   int
	lastChange time.Time
	area       float64
	elapsed    float64
	count      float64
	// firstAdj is 1 in the first period after a poke: the poke already told
	// the autoscaler about one request, so the period reports one less.
	firstAdj float64
	labels   Labels
}

// advance accounts the time since the last change at the current concurrency.
// Out-of-order times (racing goroutines) are ignored, as upstream does.
func (s *revStats) advance(now time.Time) {
	if d := now.Sub(s.lastChange); d > 0 {
		secs := d.Seconds()
		s.elapsed += secs
		s.area += float64(s.inFlight) * secs
		s.lastChange = now
	}
}

// New returns a Reporter. podName becomes Stat.PodName; reg, if non-nil,
// gets the gauge kn_revision_request_concurrency.
func New(podName string, sink Sink, clk clock.WithTicker, reg prometheus.Registerer) *Reporter {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kn_revision_request_concurrency",
		Help: "Concurrent requests that are routed to Activator",
	}, []string{"kn_service_name", "kn_configuration_name", "kn_revision_name", "k8s_namespace_name"})
	if reg != nil {
		reg.MustRegister(g)
	}
	return &Reporter{podName: podName, sink: sink, clk: clk, gauge: g, revs: map[types.NamespacedName]*revStats{}}
}

// Token is returned by Begin; call End when the request completes.
type Token struct {
	s   *revStats
	clk clock.PassiveClock
}

// End records the request's completion.
func (t Token) End() {
	now := t.clk.Now()
	t.s.mu.Lock()
	t.s.advance(now)
	t.s.inFlight--
	t.s.mu.Unlock()
}

// Begin records a request's arrival for rev. The first request of a revision
// that is not tracked (new, or idle for a whole period) pokes the sink.
func (r *Reporter) Begin(rev types.NamespacedName, labels Labels) Token {
	now := r.clk.Now()
	r.mu.RLock()
	s := r.revs[rev]
	if s != nil {
		// Recorded under the read lock so the idle sweep sees it.
		s.arrive(now)
		r.mu.RUnlock()
		return Token{s: s, clk: r.clk}
	}
	r.mu.RUnlock()

	r.mu.Lock()
	s = r.revs[rev]
	poke := s == nil
	if poke {
		s = &revStats{lastChange: now, firstAdj: 1, labels: labels}
		r.revs[rev] = s
	}
	s.arrive(now)
	r.mu.Unlock()
	if poke {
		r.sink.Poke(wire.StatMessage{Key: rev, Stat: wire.Stat{
			PodName:                   r.podName,
			AverageConcurrentRequests: 1,
			RequestCount:              1,
		}})
	}
	return Token{s: s, clk: r.clk}
}

func (s *revStats) arrive(now time.Time) {
	s.mu.Lock()
	s.advance(now)
	s.inFlight++
	s.count++
	s.mu.Unlock()
}

// Report cuts the period ending at now: one message per tracked revision.
// Revisions idle for the whole period are reported once more (at zero) and
// then forgotten, so their next request pokes again.
func (r *Reporter) Report(now time.Time) []wire.StatMessage {
	var idle []types.NamespacedName
	r.mu.RLock()
	msgs := make([]wire.StatMessage, 0, len(r.revs))
	for key, s := range r.revs {
		s.mu.Lock()
		s.advance(now)
		avg := 0.0
		if s.elapsed > 0 {
			avg = s.area / s.elapsed
		}
		count, adj, inFlight, labels := s.count, s.firstAdj, s.inFlight, s.labels
		s.area, s.elapsed, s.count, s.firstAdj = 0, 0, 0, 0
		s.mu.Unlock()

		if avg == 0 && inFlight == 0 {
			idle = append(idle, key)
		}
		// The poke said concurrency 1; the period's real average can be
		// below that, hence the floor at 0.
		conc := math.Max(avg-adj, 0)
		msgs = append(msgs, wire.StatMessage{Key: key, Stat: wire.Stat{
			PodName:                   r.podName,
			AverageConcurrentRequests: conc,
			RequestCount:              count - adj,
		}})
		r.gauge.WithLabelValues(labels.Service, labels.Configuration, key.Name, key.Namespace).Set(conc)
	}
	r.mu.RUnlock()

	if len(idle) > 0 {
		r.mu.Lock()
		for _, key := range idle {
			s := r.revs[key]
			if s == nil {
				continue // a concurrent Report got there first
			}
			s.mu.Lock()
			// A request may have arrived since the report was cut.
			stillIdle := s.inFlight == 0 && s.count == 0
			s.mu.Unlock()
			if stillIdle {
				delete(r.revs, key)
				r.gauge.DeleteLabelValues(s.labels.Service, s.labels.Configuration, key.Name, key.Namespace)
			}
		}
		r.mu.Unlock()
	}
	return msgs
}

// Tracked returns the number of revisions currently tracked.
func (r *Reporter) Tracked() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.revs)
}

// Run reports every ReportInterval until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	t := r.clk.NewTicker(ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C():
			if msgs := r.Report(now); len(msgs) > 0 {
				r.sink.Report(msgs)
			}
		}
	}
}
