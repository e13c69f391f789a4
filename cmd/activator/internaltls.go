package main

import (
	"crypto/tls"
	"net/http"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"k8s.io/client-go/kubernetes"
	knativetls "knative.dev/pkg/network/tls"

	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
)

// internalTLS is what system-internal-tls adds to the activator: the
// certificate store and its watcher, the server config of the HTTPS port and
// the TLS transports to queue-proxy.
type internalTLS struct {
	store     *internaltls.Store
	watcher   *internaltls.Watcher
	server    *tls.Config
	transport *proxy.Transport
}

// newInternalTLS reads ACTIVATOR_TLS_MIN_VERSION, _MAX_VERSION, _CIPHER_SUITES
// and _CURVE_PREFERENCES as upstream does (knative.dev/pkg's reader; TLS 1.3
// by default), an invalid one being an error naming it, and builds the TLS
// versions of the plain transport.
func newInternalTLS(kube kubernetes.Interface, ns string, plain *proxy.Transport, logger *zap.SugaredLogger) (*internalTLS, error) {
	server, err := knativetls.DefaultConfigFromEnv("ACTIVATOR_")
	if err != nil {
		return nil, err
	}
	store := internaltls.NewStore(ns, logger.Named("internaltls"))
	server.GetCertificate = store.GetCertificate
	it := &internalTLS{store: store, watcher: internaltls.NewWatcher(kube, store), server: server}
	if plain != nil {
		h1, h2 := internaltls.Transports(plain.H1, plain.H2C, store)
		it.transport = &proxy.Transport{H1: h1, H2C: h2}
	}
	return it, nil
}

// httpsServer is the :8112 server: HTTP/1.1 and HTTP/2 (by ALPN) over TLS,
// and prior-knowledge HTTP/2 over TLS without ALPN, which upstream's :8112
// also takes (its h2c handler sees the preface on the TLS connection).
func httpsServer(addr string, h http.Handler, cfg *tls.Config) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return &http.Server{Addr: addr, Handler: h2c.NewHandler(h, &http2.Server{}), Protocols: p, TLSConfig: cfg,
		ReadHeaderTimeout: time.Minute}
}
