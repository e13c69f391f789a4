package internaltls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
)

type namespaceKey struct{}

// WithNamespace returns ctx carrying the namespace of the revision a request
// goes to: the dial checks the pod's certificate for that namespace's SAN.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, namespaceKey{}, ns)
}

// NamespaceFrom returns what WithNamespace put in ctx.
func NamespaceFrom(ctx context.Context) (string, bool) {
	ns, ok := ctx.Value(namespaceKey{}).(string)
	return ns, ok && ns != ""
}

// TrustSource gives the CAs to verify queue-proxy with (a *Store).
type TrustSource interface {
	Roots() *x509.CertPool
}

// Dialer dials queue-proxy over TLS as upstream's activator does: TLS 1.3 at
// least, ServerName data-plane.knative.dev verified against the trust roots
// of the moment, and the SAN kn-user-<namespace> of the request's revision
// demanded on top. A connection is keyed by pod address, so it only ever
// carries requests of the namespace it was verified for.
type Dialer struct {
	Trust TrustSource
	// Dial opens the TCP connection (the proxy's back-off dialer); nil: net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// NextProtos is offered by ALPN: nil for HTTP/1.1, {"h2"} for HTTP/2.
	NextProtos []string
}

// ErrNoNamespace is returned by DialTLSContext for a request whose context
// lacks WithNamespace: without it the pod's identity cannot be checked.
var ErrNoNamespace = errors.New("internal TLS: no revision namespace in the request context")

// DialTLSContext is an http.Transport's DialTLSContext. TCP errors are
// returned as they are, so a refused dial still reads as one (retryable on
// another pod); handshake errors name the address.
func (d *Dialer) DialTLSContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ns, ok := NamespaceFrom(ctx)
	if !ok {
		return nil, ErrNoNamespace
	}
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, d.config(ns))
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("internal TLS handshake with %s (namespace %s): %w", addr, ns, err)
	}
	return c, nil
}

// config is a fresh client config per connection: the roots of the moment,
// so a rotated CA applies to the next connection without touching live ones.
func (d *Dialer) config(ns string) *tls.Config {
	roots := d.Trust.Roots()
	if roots == nil {
		roots = x509.NewCertPool() // never fall back to the system roots
	}
	return &tls.Config{
		RootCAs:          roots,
		ServerName:       ServerName,
		MinVersion:       tls.VersionTLS13,
		NextProtos:       slices.Clone(d.NextProtos),
		VerifyConnection: verifySAN(UserSAN(ns)),
	}
}

// verifySAN demands san among the leaf's DNS names, after the usual chain
// and ServerName verification.
func verifySAN(san string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		if slices.Contains(cs.PeerCertificates[0].DNSNames, san) {
			return nil
		}
		return fmt.Errorf("certificate SANs %v lack %q", cs.PeerCertificates[0].DNSNames, san)
	}
}

// Transports returns TLS versions of the proxy's HTTP/1.1 and h2c transports:
// same pools and limits, HTTP/1.1 over TLS and HTTP/2 over TLS (ALPN h2)
// dialed by Dialers over trust, whose TCP dials use base's DialContext.
func Transports(h1, h2c *http.Transport, trust TrustSource) (*http.Transport, *http.Transport) {
	th1 := h1.Clone()
	th1.DialTLSContext = (&Dialer{Trust: trust, Dial: h1.DialContext}).DialTLSContext
	p1 := new(http.Protocols)
	p1.SetHTTP1(true)
	th1.Protocols = p1

	th2 := h2c.Clone()
	th2.DialTLSContext = (&Dialer{Trust: trust, Dial: h2c.DialContext, NextProtos: []string{"h2"}}).DialTLSContext
	p2 := new(http.Protocols)
	p2.SetHTTP2(true)
	th2.Protocols = p2
	return th1, th2
}
