package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Transport is the activator's one shared client transport: HTTP/1.1 with
// keep-alive, and prior-knowledge h2c for HTTP/2 traffic. The endpoint prober
// uses it too, so the connection a successful probe opened carries the first
// real request.
type Transport struct {
	H1  *http.Transport
	H2C *http.Transport
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport builds a Transport with the given idle-connection bounds
// (MAX_IDLE_PROXY_CONNS, MAX_IDLE_PROXY_CONNS_PER_HOST).
func NewTransport(maxIdle, maxIdlePerHost int) *Transport {
	dial := (&backoffDialer{initial: 50 * time.Millisecond, factor: 1.4, steps: 15}).DialContext
	h1 := &http.Transport{
		// Pod traffic never goes through an environment proxy.
		Proxy:                 nil,
		DialContext:           dial,
		MaxIdleConns:          maxIdle,
		MaxIdleConnsPerHost:   maxIdlePerHost,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The response is relayed byte for byte; never add Accept-Encoding.
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}
	h2c := h1.Clone()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2c.Protocols = p
	return &Transport{H1: h1, H2C: h2c}
}

// RoundTrip picks h2c for HTTP/2 requests, as upstream's auto transport does.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.ProtoMajor == 2 {
		return t.H2C.RoundTrip(r)
	}
	return t.H1.RoundTrip(r)
}

// For returns the transport for a request: h2c when the request is HTTP/2 or
// the revision speaks h2c (its queue-proxy forwards with the inbound
// protocol, and an h2c-only app would not understand HTTP/1.1).
func (t *Transport) For(r *http.Request, h2c bool) http.RoundTripper {
	if h2c || r.ProtoMajor == 2 {
		return t.H2C
	}
	return t.H1
}

// CloseIdleConnections closes idle connections of both transports.
func (t *Transport) CloseIdleConnections() {
	t.H1.CloseIdleConnections()
	t.H2C.CloseIdleConnections()
}

// backoffDialer retries dials that time out with growing per-attempt
// timeouts: a fresh SYN after a short wait beats the kernel's 1 s
// retransmission when a busy pod's accept queue drops one. Refused or
// unreachable dials fail at once so the throttler can pick another pod.
type backoffDialer struct {
	initial time.Duration
	factor  float64
	steps   int
}

func (d *backoffDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	timeout := d.initial
	var err error
	for i := 0; i < d.steps; i++ {
		nd := net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Second}
		var c net.Conn
		c, err = nd.DialContext(ctx, network, addr)
		if err == nil {
			return c, nil
		}
		var ne net.Error
		if ctx.Err() != nil || !errors.As(err, &ne) || !ne.Timeout() {
			return nil, err
		}
		timeout = time.Duration(float64(timeout) * d.factor)
	}
	return nil, err
}
