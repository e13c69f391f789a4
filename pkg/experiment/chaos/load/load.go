// Package load sends requests at a fixed rate through an ingress and records every outcome: status,
// error class and latency. A chaos run keeps two loads going while faults come and go: a steady one to
// a service that never scales to zero, and a cold one that pokes services which do.
package load

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// Error classes of an outcome.
const (
	OK        = "ok"
	Refused   = "refused"
	Reset     = "reset"
	Timeout   = "timeout"
	Status5xx = "5xx"
	Status4xx = "4xx"
	Other     = "other"
)

// Outcome is one request's result.
type Outcome struct {
	Stream  string        `json:"stream"` // "steady" or "cold"
	Target  string        `json:"target"` // the ksvc
	Send    time.Time     `json:"send"`
	Latency time.Duration `json:"latency_ns"`
	Status  int           `json:"status"`
	Class   string        `json:"class"`
	// Hop is where a failure came from when the answer says so: "ingress", "activator",
	// "queue-proxy"; "" for a success, "unknown" when nothing tells.
	Hop   string `json:"hop,omitempty"`
	Error string `json:"error,omitempty"`
}

// Failed reports whether the request was lost: anything but a 2xx answer.
func (o Outcome) Failed() bool { return o.Class != OK }

// Classify names the class of a request's result: the transport error's kind, or the status range.
func Classify(status int, err error) string {
	switch {
	case err != nil:
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return Refused
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
			return Reset
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
			return Timeout
		}
		return Other
	case status >= 500:
		return Status5xx
	case status >= 400:
		return Status4xx
	case status >= 200 && status < 300:
		return OK
	}
	return Other
}

// Hops of a failed request.
const (
	HopIngress    = "ingress"
	HopActivator  = "activator"
	HopQueueProxy = "queue-proxy"
	HopUnknown    = "unknown"
)

// bodyLimit bounds how much of a failed answer is kept: enough for an error line.
const bodyLimit = 200

// Hop names the hop that answered a failed request, from what the answer says: a refused or reset
// connection is the client's to the ingress, a timeout could be anywhere; the activator and the queue-proxy answer a proxy error with
// the dial error as body (the activator dials a pod's :8012, the queue-proxy the app on
// 127.0.0.1:8080), and the activator's own refusals name the revision or the activator or carry
// Retry-After; the lab's ingress answers its own proxy errors with an empty body or "no route"/"no
// backend".
func Hop(status int, err error, body string, h http.Header) string {
	switch {
	case err != nil && Classify(0, err) == Timeout:
		// Nobody answered in time: the request may be waiting at any hop.
		return HopUnknown
	case err != nil:
		return HopIngress
	case status >= 200 && status < 400:
		return ""
	}
	b := strings.ToLower(body)
	switch {
	case strings.Contains(b, "127.0.0.1:8080"), strings.Contains(b, "user-container"), strings.Contains(b, "queue-proxy"):
		return HopQueueProxy
	case strings.Contains(b, ":8012"), strings.Contains(b, "revision"), strings.Contains(b, "activator"),
		strings.Contains(b, "endpoint"), h.Get("Retry-After") != "":
		return HopActivator
	case strings.Contains(b, "no route for host"), strings.Contains(b, "no backend"), strings.TrimSpace(b) == "" && status >= 500:
		return HopIngress
	}
	return HopUnknown
}

// Target is one service behind the ingress.
type Target struct {
	Name, Host, Path string
}

// Generator sends requests to its targets in turn, one every Interval, each bounded by Timeout and
// never more than MaxInFlight at once (a stalled path then shows as timeouts, not as unbounded memory).
type Generator struct {
	Stream      string
	Ingress     string // host:port
	Targets     []Target
	Interval    time.Duration
	Timeout     time.Duration
	MaxInFlight int
	Client      *http.Client
	Clock       clock.WithTicker
}

// NewClient returns a client with its own transport, no proxy from the environment, and keep-alives,
// as a user's client would have: a reset of a pooled connection is part of what a fault costs.
func NewClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// Run sends until ctx ends and passes each outcome to record (from many goroutines). It returns after
// every request it sent has finished.
func (g Generator) Run(ctx context.Context, record func(Outcome)) {
	var c clock.WithTicker = clock.RealClock{}
	if g.Clock != nil {
		c = g.Clock
	}
	client := g.Client
	if client == nil {
		client = NewClient()
	}
	maxIn := g.MaxInFlight
	if maxIn <= 0 {
		maxIn = 256
	}
	slots := make(chan struct{}, maxIn)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := c.NewTicker(g.Interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		t := g.Targets[i%len(g.Targets)]
		select {
		case slots <- struct{}{}:
			wg.Go(func() {
				defer func() { <-slots }()
				record(g.one(ctx, client, c, t))
			})
		default:
			// Every slot is stuck: the request counts as lost (a user would have timed out too).
			record(Outcome{Stream: g.Stream, Target: t.Name, Send: c.Now(), Class: Timeout, Error: "no free slot: every request in flight is stalled"})
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		}
	}
}

func (g Generator) one(ctx context.Context, client *http.Client, c clock.PassiveClock, t Target) Outcome {
	o := Outcome{Stream: g.Stream, Target: t.Name, Send: c.Now()}
	// The request outlives the run's context by its own timeout: a request sent just before the end
	// still gets its answer, so the end of a phase does not show as lost requests.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+g.Ingress+t.Path, nil)
	if err != nil {
		o.Class, o.Error = Other, err.Error()
		return o
	}
	req.Host = t.Host
	resp, err := client.Do(req)
	var body []byte
	var header http.Header
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		o.Status, header = resp.StatusCode, resp.Header
	}
	o.Latency = c.Since(o.Send)
	o.Class = Classify(o.Status, err)
	o.Hop = Hop(o.Status, err, string(body), header)
	switch {
	case err != nil:
		o.Error = err.Error()
	case o.Failed():
		o.Error = strings.TrimSpace(string(body[:min(len(body), bodyLimit)]))
	}
	return o
}
