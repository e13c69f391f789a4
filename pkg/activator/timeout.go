package activator

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// TimeoutBody is the body of the 504 written when a revision timeout expires
// before the response started.
const TimeoutBody = "activator request timeout"

// errTimeout is the cancellation cause of a request whose timeout expired.
var errTimeout = errors.New(TimeoutBody)

// Timeouts are a revision's request limits; zero disables one.
type Timeouts struct {
	// Total bounds the whole request (timeoutSeconds).
	Total time.Duration
	// ResponseStart bounds the time to the first response byte
	// (responseStartTimeoutSeconds).
	ResponseStart time.Duration
	// Idle bounds the time between writes, counted from the start until the
	// first write (idleTimeoutSeconds).
	Idle time.Duration
}

// timeoutWriter guards the real ResponseWriter so that a timeout firing on
// the watcher goroutine and the handler writing never interleave, and so that
// a 504 is only written while no header has gone out. The handler gets its
// own header map, copied on WriteHeader: the 504 path never touches a map
// the handler may be writing.
type timeoutWriter struct {
	w   http.ResponseWriter
	clk clock.PassiveClock
	h   http.Header

	mu          sync.Mutex
	start       time.Time
	lastWrite   time.Time // zero until the response started
	status      int
	size        int
	wroteHeader bool
	timedOut    bool
	hijacked    bool
	finished    bool
	abort       bool // timed out after the headers went out
	cancel      context.CancelCauseFunc
}

var (
	_ http.ResponseWriter = (*timeoutWriter)(nil)
	_ http.Flusher        = (*timeoutWriter)(nil)
	_ http.Hijacker       = (*timeoutWriter)(nil)
)

func (tw *timeoutWriter) Header() http.Header { return tw.h }

// Unwrap lets http.ResponseController reach the server's writer for
// deadlines and full duplex.
func (tw *timeoutWriter) Unwrap() http.ResponseWriter { return tw.w }

func (tw *timeoutWriter) WriteHeader(code int) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut || tw.hijacked {
		return
	}
	tw.writeHeaderLocked(code)
}

func (tw *timeoutWriter) writeHeaderLocked(code int) {
	if tw.wroteHeader {
		return
	}
	dst := tw.w.Header()
	for k, v := range tw.h {
		dst[k] = v
	}
	tw.w.WriteHeader(code)
	tw.lastWrite = tw.clk.Now()
	if code >= 200 || code == http.StatusSwitchingProtocols {
		tw.wroteHeader = true
		tw.status = code
	}
}

func (tw *timeoutWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return 0, http.ErrHandlerTimeout
	}
	if tw.hijacked {
		return 0, http.ErrHijacked
	}
	if !tw.wroteHeader {
		tw.writeHeaderLocked(http.StatusOK)
	}
	n, err := tw.w.Write(p)
	tw.size += n
	tw.lastWrite = tw.clk.Now()
	return n, err
}

func (tw *timeoutWriter) FlushError() error {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return http.ErrHandlerTimeout
	}
	if tw.hijacked {
		return http.ErrHijacked
	}
	if !tw.wroteHeader {
		tw.writeHeaderLocked(http.StatusOK)
	}
	return http.NewResponseController(tw.w).Flush()
}

func (tw *timeoutWriter) Flush() { _ = tw.FlushError() }

// Hijack hands the connection over (websocket upgrades). From then on only
// the total timeout applies: it ends the tunnel by cancelling the request.
func (tw *timeoutWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return nil, nil, http.ErrHandlerTimeout
	}
	c, brw, err := http.NewResponseController(tw.w).Hijack()
	if err == nil {
		tw.hijacked = true
		tw.status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

type timeoutKind int

const (
	totalTimeout timeoutKind = iota
	responseStartTimeout
	idleTimeout
)

// expire handles a fired timer. It returns how long until the idle timer
// must be checked again (0: no re-arm).
func (tw *timeoutWriter) expire(kind timeoutKind, idle time.Duration) (rearm time.Duration) {
	// The current time, not the timer's: a late watcher must not re-arm a
	// timer that is already overdue.
	now := tw.clk.Now()
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.finished || tw.timedOut {
		return 0
	}
	if tw.hijacked {
		if kind == totalTimeout {
			tw.cancel(errTimeout)
		}
		return 0
	}
	switch kind {
	case responseStartTimeout:
		if !tw.lastWrite.IsZero() {
			return 0
		}
	case idleTimeout:
		last := tw.lastWrite
		if last.IsZero() {
			last = tw.start
		}
		if since := now.Sub(last); since < idle {
			return idle - since
		}
	}
	if tw.wroteHeader {
		tw.abort = true
	} else {
		hdr := tw.w.Header()
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		hdr.Set("X-Content-Type-Options", "nosniff")
		tw.w.WriteHeader(http.StatusGatewayTimeout)
		io.WriteString(tw.w, TimeoutBody)
		tw.status = http.StatusGatewayTimeout
		tw.wroteHeader = true
	}
	// Once headers went out nothing can be said: failing the handler's next
	// write aborts the response, so the client never mistakes a truncated
	// body for a complete one.
	tw.timedOut = true
	tw.cancel(errTimeout)
	return 0
}

// finish runs after the handler returned: headers it set without writing,
// and trailers it set after the body, are handed to the real writer.
func (tw *timeoutWriter) finish() {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	tw.finished = true
	if tw.timedOut || tw.hijacked {
		return
	}
	if !tw.wroteHeader {
		tw.writeHeaderLocked(http.StatusOK)
		return
	}
	var declared map[string]bool
	for _, v := range tw.h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if declared == nil {
				declared = map[string]bool{}
			}
			declared[http.CanonicalHeaderKey(strings.TrimSpace(k))] = true
		}
	}
	dst := tw.w.Header()
	for k, v := range tw.h {
		if declared[k] || strings.HasPrefix(k, http.TrailerPrefix) {
			dst[k] = v
		}
	}
}

// serveWithTimeouts runs next under to. It returns the status written (0
// if none) and whether the response must be aborted: a timeout fired after
// the headers went out, and only a broken connection tells the client its
// response is incomplete.
func serveWithTimeouts(w http.ResponseWriter, r *http.Request, to Timeouts, clk clock.Clock, next func(http.ResponseWriter, *http.Request)) (status, size int, abort bool) {
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	tw := &timeoutWriter{w: w, clk: clk, h: make(http.Header, len(w.Header())), cancel: cancel}
	for k, v := range w.Header() {
		tw.h[k] = v
	}
	tw.start = clk.Now()

	var timers []clock.Timer
	var chans [3]<-chan time.Time
	for kind, d := range [3]time.Duration{to.Total, to.ResponseStart, to.Idle} {
		if d > 0 {
			t := clk.NewTimer(d)
			timers = append(timers, t)
			chans[kind] = t.C()
		}
	}
	done := make(chan struct{})
	watcherDone := make(chan struct{})
	if len(timers) > 0 {
		go func() {
			defer close(watcherDone)
			for {
				var kind timeoutKind
				select {
				case <-done:
					return
				case <-chans[totalTimeout]:
					kind = totalTimeout
				case <-chans[responseStartTimeout]:
					kind = responseStartTimeout
				case <-chans[idleTimeout]:
					kind = idleTimeout
				}
				chans[kind] = nil
				if d := tw.expire(kind, to.Idle); d > 0 {
					t := clk.NewTimer(d)
					timers = append(timers, t)
					chans[idleTimeout] = t.C()
				}
			}
		}()
	} else {
		close(watcherDone)
	}
	defer func() {
		// Also on panic (an aborted proxy copy): stop the watcher first.
		close(done)
		<-watcherDone
		for _, t := range timers {
			t.Stop()
		}
	}()

	next(tw, r.WithContext(ctx))
	tw.finish()

	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.status, tw.size, tw.abort
}
