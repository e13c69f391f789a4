// Package proxy forwards activator requests to a revision's pods with the
// header contract queue-proxy expects, over one shared transport, and tells
// the caller when a failed attempt never reached the pod and may be retried.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// Header names of the activator ↔ queue-proxy contract.
const (
	RevisionHeader     = "Knative-Serving-Revision"
	NamespaceHeader    = "Knative-Serving-Namespace"
	ProxyHeader        = "K-Proxy-Request"
	OriginalHostHeader = "K-Original-Host"
	// ProxyHeaderValue makes queue-proxy count the request as proxied, so the
	// autoscaler does not count it twice.
	ProxyHeaderValue = "activator"
)

// ErrNotSent is wrapped by Serve's error when the attempt failed before any
// byte of the request reached the pod (the dial failed): nothing was written
// to the client and the request may be sent to another pod.
var ErrNotSent = errors.New("request not sent: could not connect to the pod")

// Options tune a Proxy.
type Options struct {
	// WrapTransport, if set, wraps each shared transport once (client tracing).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// HTTPS sends requests as https (system-internal-tls): the Transport's two
	// transports must then dial TLS (H2C carrying HTTP/2 over TLS), and
	// Target.Dest name the TLS port.
	HTTPS bool
}

// Proxy is a reverse proxy to pod addresses. It is safe for concurrent use.
type Proxy struct {
	h1, h2c http.RoundTripper
	scheme  string
	logger  *zap.SugaredLogger
	buffers httputil.BufferPool
}

// New returns a Proxy over t.
func New(t *Transport, logger *zap.SugaredLogger, opts Options) *Proxy {
	var h1, h2c http.RoundTripper = t.H1, t.H2C
	if opts.WrapTransport != nil {
		h1, h2c = opts.WrapTransport(h1), opts.WrapTransport(h2c)
	}
	scheme := "http"
	if opts.HTTPS {
		scheme = "https"
	}
	return &Proxy{h1: h1, h2c: h2c, scheme: scheme, logger: logger, buffers: &bufferPool{}}
}

// PassthroughHeader asks a mesh sidecar to deliver the request to the pod
// addressed, not to balance it (config-network enable-mesh-pod-addressability).
const PassthroughHeader = "K-Passthrough-Lb"

// Target is where one attempt goes.
type Target struct {
	// Dest is the pod (or private service) address "ip:port".
	Dest string
	// H2C forces h2c (the revision's port is h2c); HTTP/2 requests use it anyway.
	H2C bool
	// PassthroughHost, if set, becomes the outgoing Host (the revision's
	// private service, "<rev>-private.<ns>") with K-Passthrough-Lb: true, for
	// meshes that route by Host.
	PassthroughHost string
}

// Serve proxies r to t.Dest, over h2c when t.H2C is set or r is HTTP/2. It returns nil once a response, or a 502 for a failed attempt, was
// written. It returns an error wrapping ErrNotSent, with nothing written,
// when the pod refused the connection before the request (or any of its
// body) was sent: the caller may then call Serve again with another dest.
// Serve never retries by itself: a request that reached a pod is never sent
// twice.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, t Target) error {
	body := TrackBody(r)
	a := attempt{p: p, dest: t.Dest, host: t.PassthroughHost, body: body}
	a.rp.Rewrite = a.rewrite
	a.rp.ErrorHandler = a.handleError
	a.rp.BufferPool = p.buffers
	// FlushInterval 0: the standard library already flushes at once for
	// streaming responses (unknown length, as gRPC, or text/event-stream)
	// and batches only responses of known length.
	a.rp.Transport = p.h1
	if t.H2C || r.ProtoMajor == 2 {
		a.rp.Transport = p.h2c
	}
	a.rp.ServeHTTP(w, r)
	return a.notSent
}

type attempt struct {
	rp      httputil.ReverseProxy
	p       *Proxy
	dest    string
	host    string
	body    *TrackedBody
	notSent error
}

func (a *attempt) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	out.URL.Scheme = a.p.scheme
	out.URL.Host = a.dest
	// The pod sees its own address as Host; queue-proxy restores the
	// original from K-Original-Host.
	out.Host = ""
	if out.Header.Get(OriginalHostHeader) == "" {
		out.Header.Set(OriginalHostHeader, in.Host)
	}
	out.Header.Del(RevisionHeader)
	out.Header.Del(NamespaceHeader)
	out.Header.Set(ProxyHeader, ProxyHeaderValue)
	if a.host != "" {
		out.Host = a.host
		out.Header.Set(PassthroughHeader, "true")
	}

	// Rewrite mode drops the forwarding headers; keep the ingress's ones
	// (X-Forwarded-Proto matters to apps) and append the client to
	// X-Forwarded-For, as upstream's Director-based proxy does.
	for _, h := range []string{"Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := in.Header[h]; ok {
			out.Header[h] = v
		}
	}
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		prior, had := in.Header["X-Forwarded-For"]
		if had && len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	} else if prior, ok := in.Header["X-Forwarded-For"]; ok {
		out.Header["X-Forwarded-For"] = prior
	}
}

func (a *attempt) handleError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil || errors.Is(err, context.Canceled) {
		// The client left or the request timed out; whoever cancelled
		// answers (or nobody is listening).
		a.p.logger.Debugw("Proxy attempt cancelled", "dest", a.dest, zap.Error(err))
		return
	}
	if IsDialError(err) && !a.body.Started() {
		a.notSent = fmt.Errorf("%w: %s: %w", ErrNotSent, a.dest, err)
		return
	}
	a.p.logger.Errorw("Error proxying request", "dest", a.dest, zap.Error(err))
	http.Error(w, err.Error(), http.StatusBadGateway)
}

// IsDialError reports whether err happened while connecting, before the
// request was written (refused, unreachable, dial timeout). Together with
// TrackedBody.Started it tells whether a failed attempt may be sent again.
func IsDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// TrackedBody lets a request body survive a failed attempt: the transport
// closes the body on every error, which would make a retry impossible. A
// body that was never read is kept open (the server closes the real one when
// the handler returns); once read, Close passes through so a reader blocked
// on a slow client is released.
//
// It also ends a body of known length itself, once all of it was read. The
// transport reads once more after Content-Length bytes to check for excess,
// and the HTTP/1 server closes the request body as soon as the response
// headers go out: a pod that answers right after reading the body makes that
// extra read fail, and the transport then kills the connection in the middle
// of relaying the response (seen with a plain httputil.ReverseProxy too).
type TrackedBody struct {
	rc        io.ReadCloser
	remaining int64 // bytes still expected; -1 when the length is unknown
	read      atomic.Bool
}

// TrackBody wraps r.Body in a TrackedBody (once; a tracked body is returned
// as is). Call it before handing r to a reverse proxy.
func TrackBody(r *http.Request) *TrackedBody {
	if tb, ok := r.Body.(*TrackedBody); ok {
		return tb
	}
	if r.Body == nil || r.Body == http.NoBody {
		return &TrackedBody{}
	}
	remaining := r.ContentLength
	if remaining < 0 {
		remaining = -1
	}
	tb := &TrackedBody{rc: r.Body, remaining: remaining}
	r.Body = tb
	return tb
}

// Started reports whether any of the body was read, i.e. may have been sent.
func (b *TrackedBody) Started() bool { return b.read.Load() }

func (b *TrackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	if b.remaining == 0 {
		return 0, io.EOF
	}
	if b.remaining > 0 && int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.rc.Read(p)
	if b.remaining > 0 {
		b.remaining -= int64(n)
		if b.remaining == 0 && err == nil {
			err = io.EOF
		}
	}
	return n, err
}

func (b *TrackedBody) Close() error {
	if b.read.Load() {
		return b.rc.Close()
	}
	return nil
}

// bufferPool recycles the 32 KiB copy buffers of the reverse proxy.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.pool.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32*1024)
}

func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }
