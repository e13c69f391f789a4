package report

import (
	"math"
	"slices"
	"time"
)

// Phase is one measured span of a cold start.
type Phase struct {
	Name string
	// Of returns the span, and false when a needed instant is missing.
	Of func(s *Sample) (time.Duration, bool)
	// Thaw marks phases only Thaw's own timeline provides.
	Thaw bool
}

func span(a, b time.Time) (time.Duration, bool) {
	if a.IsZero() || b.IsZero() {
		return 0, false
	}
	return b.Sub(a), true
}

func thawSpan(s *Sample, a, b func(*ThawTimes) time.Time) (time.Duration, bool) {
	if s.Thaw == nil || s.Thaw.Warm {
		return 0, false
	}
	return span(a(s.Thaw), b(s.Thaw))
}

// Phase names, as in the tables and files.
const (
	RequestToScale   = "request→scale"
	ScaleToQPUp      = "scale→qp_up"
	QPUpToFirstByte  = "qp_up→first_byte"
	Total            = "total"
	Knative          = "knative"
	ThawArrivalPoke  = "thaw arrival→poke"
	ThawPokeDecide   = "thaw poke→decide"
	ThawDecideScale  = "thaw decide→scale"
	ThawReadyToFirst = "thaw ready→first_byte"
)

// Phases are the spans every report shows: the external ones measured the same way for every side,
// then Thaw's internal ones.
var Phases = []Phase{
	{Name: RequestToScale, Of: func(s *Sample) (time.Duration, bool) { return span(s.Send, s.Scale) }},
	{Name: ScaleToQPUp, Of: func(s *Sample) (time.Duration, bool) { return span(s.Scale, s.QPUp) }},
	{Name: QPUpToFirstByte, Of: func(s *Sample) (time.Duration, bool) { return span(s.QPUp, s.FirstByte) }},
	{Name: Total, Of: func(s *Sample) (time.Duration, bool) { return span(s.Send, s.FirstByte) }},
	// The part of a cold start Knative's components decide: getting the /scale patch out, and getting
	// the first byte through once the pod's queue-proxy runs. The rest is the kubelet and containerd.
	{Name: Knative, Of: func(s *Sample) (time.Duration, bool) {
		a, ok1 := span(s.Send, s.Scale)
		b, ok2 := span(s.QPUp, s.FirstByte)
		return a + b, ok1 && ok2
	}},
	{Name: ThawArrivalPoke, Thaw: true, Of: func(s *Sample) (time.Duration, bool) {
		return thawSpan(s, func(t *ThawTimes) time.Time { return t.Arrival }, func(t *ThawTimes) time.Time { return t.PokeSent })
	}},
	{Name: ThawPokeDecide, Thaw: true, Of: func(s *Sample) (time.Duration, bool) {
		return thawSpan(s, func(t *ThawTimes) time.Time { return t.PokeSent }, func(t *ThawTimes) time.Time { return t.Decided })
	}},
	{Name: ThawDecideScale, Thaw: true, Of: func(s *Sample) (time.Duration, bool) {
		return thawSpan(s, func(t *ThawTimes) time.Time { return t.Decided }, func(t *ThawTimes) time.Time { return t.ScaleWritten })
	}},
	{Name: ThawReadyToFirst, Thaw: true, Of: func(s *Sample) (time.Duration, bool) {
		return thawSpan(s, func(t *ThawTimes) time.Time { return t.PodReady }, func(t *ThawTimes) time.Time { return t.FirstByte })
	}},
}

// PhaseByName returns the phase called name.
func PhaseByName(name string) (Phase, bool) {
	for _, p := range Phases {
		if p.Name == name {
			return p, true
		}
	}
	return Phase{}, false
}

// Quantiles are the figures of one phase over a set of samples.
type Quantiles struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P95 time.Duration `json:"p95"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// Percentile is the nearest-rank percentile (p in [0,1]) of sorted values: the smallest value with at
// least p of the values at or below it.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Summarize computes the quantiles of values (which it sorts in place).
func Summarize(values []time.Duration) Quantiles {
	slices.Sort(values)
	if len(values) == 0 {
		return Quantiles{}
	}
	return Quantiles{N: len(values), P50: Percentile(values, 0.5), P90: Percentile(values, 0.9),
		P95: Percentile(values, 0.95), P99: Percentile(values, 0.99), Max: values[len(values)-1]}
}

// Values returns the phase's spans over the successful samples that have it.
func (p Phase) Values(samples []Sample) []time.Duration {
	var out []time.Duration
	for i := range samples {
		if !samples[i].OK() {
			continue
		}
		if d, ok := p.Of(&samples[i]); ok {
			out = append(out, d)
		}
	}
	return out
}
