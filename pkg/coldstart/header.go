// Package coldstart records the phases of cold starts, the requests that
// reach a revision with no pod to route to. The activator side (Tracker)
// times arrival, poke sent, first pod ready and first byte; the autoscaler
// side (Recorder) times poke received, scale decision and the /scale patch.
// Both export Prometheus histograms per phase and an OpenTelemetry span
// "coldstart" per cold start. Experiment tools read the activator's timeline
// from an opt-in response header and the autoscaler's from a bounded JSON
// ring.
package coldstart

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RequestHeader is the opt-in request header: any non-empty value asks the
// activator for ResponseHeader. The activator strips it before proxying.
const RequestHeader = "Thaw-Coldstart-Timing"

// ResponseHeader carries an ActivatorTimeline (see Header), or "warm" for a
// request that found a routable pod on arrival.
const ResponseHeader = "Thaw-Coldstart"

// Warm is ResponseHeader's value for a request that was not a cold start.
const Warm = "warm"

// ActivatorTimeline is one cold request as the activator saw it. Zero times
// are unknown (e.g. no poke was sent because the revision's reporter was not
// idle).
type ActivatorTimeline struct {
	Arrival, PokeSent, PodReady, FirstByte time.Time
	// Pod is the "ip:port" the response came from.
	Pod string
}

// Header keys, in the order Header writes them.
const (
	keyArrival   = "arrival"
	keyPoke      = "poke"
	keyReady     = "ready"
	keyFirstByte = "firstbyte"
	keyPod       = "pod"
)

// Header encodes t as "arrival=<unix ns>;poke=<unix ns>;ready=<unix ns>;
// firstbyte=<unix ns>;pod=<ip:port>", leaving out unknown fields.
func (t ActivatorTimeline) Header() string {
	b := make([]byte, 0, 128)
	add := func(k string, v time.Time) {
		if v.IsZero() {
			return
		}
		if len(b) > 0 {
			b = append(b, ';')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = strconv.AppendInt(b, v.UnixNano(), 10)
	}
	add(keyArrival, t.Arrival)
	add(keyPoke, t.PokeSent)
	add(keyReady, t.PodReady)
	add(keyFirstByte, t.FirstByte)
	if t.Pod != "" {
		if len(b) > 0 {
			b = append(b, ';')
		}
		b = append(b, keyPod+"="...)
		b = append(b, t.Pod...)
	}
	return string(b)
}

// ErrMalformed wraps every ParseHeader error.
var ErrMalformed = errors.New("coldstart: malformed " + ResponseHeader + " header")

// ParseHeader decodes a ResponseHeader value. warm is true for "warm".
// Unknown keys are skipped (newer activators may add some); a value without
// arrival, a duplicate key, or a time that is not a positive integer is an
// error. A time of 0 reads as unknown.
func ParseHeader(v string) (t ActivatorTimeline, warm bool, err error) {
	v = strings.TrimSpace(v)
	if v == Warm {
		return t, true, nil
	}
	if v == "" {
		return t, false, fmt.Errorf("%w: empty", ErrMalformed)
	}
	seen := map[string]bool{}
	for field := range strings.SplitSeq(v, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(field), "=")
		if !ok || k == "" {
			return ActivatorTimeline{}, false, fmt.Errorf("%w: field %q is not key=value", ErrMalformed, field)
		}
		if seen[k] {
			return ActivatorTimeline{}, false, fmt.Errorf("%w: duplicate key %q", ErrMalformed, k)
		}
		seen[k] = true
		var dst *time.Time
		switch k {
		case keyArrival:
			dst = &t.Arrival
		case keyPoke:
			dst = &t.PokeSent
		case keyReady:
			dst = &t.PodReady
		case keyFirstByte:
			dst = &t.FirstByte
		case keyPod:
			t.Pod = val
			continue
		default:
			continue
		}
		ns, err := strconv.ParseInt(val, 10, 64)
		if err != nil || ns < 0 {
			return ActivatorTimeline{}, false, fmt.Errorf("%w: %s=%q is not a unix time in nanoseconds", ErrMalformed, k, val)
		}
		if ns > 0 {
			*dst = time.Unix(0, ns)
		}
	}
	if t.Arrival.IsZero() {
		return ActivatorTimeline{}, false, fmt.Errorf("%w: no %s", ErrMalformed, keyArrival)
	}
	return t, false, nil
}

// Phases derived from a timeline; a phase whose ends are unknown or out of
// order is reported as not ok.
func phase(from, to time.Time) (time.Duration, bool) {
	if from.IsZero() || to.IsZero() || to.Before(from) {
		return 0, false
	}
	return to.Sub(from), true
}
