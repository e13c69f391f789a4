package faultinject

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// Header marks a response made up by PodError, so a client can tell an injected error from a real one.
const Header = "Thaw-Fault"

// MaxDelayed bounds the pokes and batches held back by PokeDelay and StatsDelay at once; past it a
// message is sent as usual (not delayed, not counted), so a long delay cannot grow memory.
const MaxDelayed = 1024

// Sink is the activator's stat sender as the concurrency reporter sees it. Neither method may block.
type Sink interface {
	Poke(wire.StatMessage)
	Report([]wire.StatMessage)
}

// WrapSink returns s with PokeDrop, PokeDelay, StatsDrop and StatsDelay. A delayed message is handed
// to s from a timer of clk, so the caller (the request path, for pokes) never waits. (A fake clk runs
// its timers under its own lock: in a test, s must then not read that same clock.)
func (i *Injector) WrapSink(s Sink, clk clock.WithDelayedExecution) Sink {
	return &faultySink{i: i, next: s, clk: clk}
}

type faultySink struct {
	i       *Injector
	next    Sink
	clk     clock.WithDelayedExecution
	pending atomic.Int64
}

func (f *faultySink) Poke(m wire.StatMessage) {
	if _, ok := f.i.fire(PokeDrop, "revision", m.Key.String()); ok {
		return
	}
	if f.delay(PokeDelay, func() { f.next.Poke(m) }, "revision", m.Key.String()) {
		return
	}
	f.next.Poke(m)
}

func (f *faultySink) Report(msgs []wire.StatMessage) {
	if _, ok := f.i.fire(StatsDrop, "stats", len(msgs)); ok {
		return
	}
	if f.delay(StatsDelay, func() { f.next.Report(msgs) }, "stats", len(msgs)) {
		return
	}
	f.next.Report(msgs)
}

// delay schedules send after fault's delay when it fires and there is room; it reports whether it did.
func (f *faultySink) delay(fault Fault, send func(), kv ...any) bool {
	if f.pending.Add(1) > MaxDelayed {
		f.pending.Add(-1)
		return false
	}
	s, ok := f.i.fire(fault, kv...)
	if !ok {
		f.pending.Add(-1)
		return false
	}
	f.clk.AfterFunc(s.Delay, func() {
		f.pending.Add(-1)
		send()
	})
	return true
}

// WrapPodTransport returns rt with PodLatency and PodError on every request it carries: the
// activator's proxy to a revision's pods.
func (i *Injector) WrapPodTransport(rt http.RoundTripper) http.RoundTripper {
	return &podTransport{i: i, next: rt}
}

type podTransport struct {
	i    *Injector
	next http.RoundTripper
}

func (t *podTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if s, ok := t.i.fire(PodLatency, "dest", r.URL.Host); ok {
		if err := t.i.wait(r.Context(), s.Delay); err != nil {
			closeBody(r)
			return nil, err
		}
	}
	if s, ok := t.i.fire(PodError, "dest", r.URL.Host); ok {
		closeBody(r)
		if s.Reset {
			// What the transport returns when the pod's end resets the connection mid-request: not a dial
			// error, so the proxy neither retries it elsewhere nor hides it (it answers 502).
			return nil, &net.OpError{Op: "read", Net: "tcp", Addr: fakeAddr(r.URL.Host), Err: syscall.ECONNRESET}
		}
		body := "fault injected: " + string(PodError) + "\n"
		return &http.Response{
			Status:        strconv.Itoa(s.Status) + " " + http.StatusText(s.Status),
			StatusCode:    s.Status,
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}, Header: {string(PodError)}},
			Body:          io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)),
			Request:       r,
		}, nil
	}
	return t.next.RoundTrip(r)
}

// WrapProbeTransport returns rt with ProbeStall on every request it carries: the activator's
// readiness probes of new pods. A stall at or past the probe's timeout fails the probe.
func (i *Injector) WrapProbeTransport(rt http.RoundTripper) http.RoundTripper {
	return &probeTransport{i: i, next: rt}
}

type probeTransport struct {
	i    *Injector
	next http.RoundTripper
}

func (t *probeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if s, ok := t.i.fire(ProbeStall, "dest", r.URL.Host); ok {
		if err := t.i.wait(r.Context(), s.Delay); err != nil {
			closeBody(r)
			return nil, err
		}
	}
	return t.next.RoundTrip(r)
}

// closeBody honours the RoundTripper contract: the body is closed even when nothing is sent.
func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
