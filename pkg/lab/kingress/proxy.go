package kingress

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/utils/clock"
)

// maxSelfHops bounds how often a request may loop back into this proxy
// through an ExternalName Service naming our own load balancer (how
// DomainMappings reach their Route). It stops a misconfiguration from
// recursing forever.
const maxSelfHops = 2

// ProxyOptions configure a Proxy.
type ProxyOptions struct {
	// Services resolves a split's Service to its ClusterIP and port; the host
	// has no cluster DNS, so names are never dialled.
	Services corelisters.ServiceLister
	// SelfDomains are the DNS names of our own load balancer Service; an
	// ExternalName Service pointing at one of them is served by re-routing
	// inside the proxy.
	SelfDomains []string
	// IntN returns a uniform int in [0,n) and must be safe for concurrent
	// use. Defaults to math/rand/v2.IntN; tests inject a seeded source.
	IntN func(n int) int
	// Logger receives one line per failed request.
	Logger *zap.SugaredLogger
	// Clock paces dial retries; defaults to the real clock.
	Clock clock.Clock
	// DialRetryBudget bounds how long a request that could not connect is
	// retried (a retry starts only within it); 0 means DefaultDialRetryBudget.
	DialRetryBudget time.Duration
}

// DefaultDialRetryBudget covers the second or so kube-proxy may take to
// program a new Service after its revision became Ready.
const DefaultDialRetryBudget = 5 * time.Second

// Proxy is the ingress data plane: an http.Handler routing by Host, path and
// headers to weighted splits, over a route table swapped atomically.
type Proxy struct {
	table    atomic.Pointer[Table]
	services corelisters.ServiceLister
	self     map[string]bool
	intn     func(int) int
	logger   *zap.SugaredLogger
	// clk and retryBudget pace re-sending requests that could not connect.
	clk         clock.Clock
	retryBudget time.Duration

	http1 *httputil.ReverseProxy
	h2c   *httputil.ReverseProxy
	// transports are kept for CloseIdleConnections on shutdown.
	transports []*http.Transport
}

// NewProxy returns a Proxy with an empty route table.
func NewProxy(opts ProxyOptions) *Proxy {
	p := &Proxy{
		services: opts.Services,
		intn:     opts.IntN,
		logger:   opts.Logger,
	}
	if p.intn == nil {
		p.intn = rand.IntN
	}
	if p.logger == nil {
		p.logger = zap.NewNop().Sugar()
	}
	p.self = selfSet(opts.SelfDomains)
	p.table.Store(NewTable(nil))

	p.clk = opts.Clock
	if p.clk == nil {
		p.clk = clock.RealClock{}
	}
	p.retryBudget = opts.DialRetryBudget
	if p.retryBudget <= 0 {
		p.retryBudget = DefaultDialRetryBudget
	}

	t1 := newTransport()
	t2 := newTransport()
	// Prior-knowledge HTTP/2 without TLS, for gRPC and other h2c revisions.
	t2.Protocols = new(http.Protocols)
	t2.Protocols.SetUnencryptedHTTP2(true)
	p.transports = []*http.Transport{t1, t2}
	p.http1 = p.newReverseProxy(t1, 0)
	// gRPC streams need every frame flushed at once.
	p.h2c = p.newReverseProxy(t2, -1)
	return p
}

func newTransport() *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        1000,
		MaxIdleConnsPerHost: 100,
		IdleConnTimeout:     90 * time.Second,
		// Pass bodies through as the backend encoded them.
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
}

// target is what the router decided for one request; Rewrite reads it from
// the request context.
type target struct {
	addr        string
	rewriteHost string
	headers     []map[string]string

	// body, start and wait let ErrorHandler decide whether a failed attempt
	// may be sent again; it then sets notSent and writes nothing.
	body    *proxy.TrackedBody
	start   time.Time
	wait    time.Duration
	notSent error
}

type targetKey struct{}
type hopsKey struct{}

func (p *Proxy) newReverseProxy(t *http.Transport, flush time.Duration) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport:     t,
		FlushInterval: flush,
		Rewrite: func(pr *httputil.ProxyRequest) {
			tg := pr.In.Context().Value(targetKey{}).(*target)
			pr.SetXForwarded()
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = tg.addr
			// Keep the client's Host (the backends route and log by it)
			// unless the rule rewrites it.
			pr.Out.Host = pr.In.Host
			if tg.rewriteHost != "" {
				pr.Out.Host = tg.rewriteHost
			}
			for _, hs := range tg.headers {
				for k, v := range hs {
					// Set, not Add: clients must not smuggle their own
					// Knative-Serving-Revision past the split's choice.
					pr.Out.Header.Set(k, v)
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
				// The client went away; nobody reads the status.
				w.WriteHeader(499)
				return
			}
			tg := r.Context().Value(targetKey{}).(*target)
			if notSent(tg.body, err) && p.clk.Since(tg.start)+tg.wait <= p.retryBudget {
				tg.notSent = err
				return
			}
			p.logger.Warnw("kingress: backend request failed", "host", r.Host, "path", r.URL.Path, zap.Error(err))
			w.WriteHeader(http.StatusBadGateway)
		},
	}
}

// Backoff between attempts that could not connect.
const (
	retryInitialWait = 50 * time.Millisecond
	retryMaxWait     = 500 * time.Millisecond
)

// notSent reports whether a failed attempt never sent anything, so that
// sending the request again cannot duplicate it: the dial failed (refused,
// no route to host, timeout) and no byte of the body was read.
func notSent(body *proxy.TrackedBody, err error) bool {
	return proxy.IsDialError(err) && !body.Started()
}

// Publish swaps in a new route table.
func (p *Proxy) Publish(t *Table) { p.table.Store(t) }

// Table returns the table in use.
func (p *Proxy) Table() *Table { return p.table.Load() }

// CloseIdleConnections drops idle upstream connections (on shutdown).
func (p *Proxy) CloseIdleConnections() {
	for _, t := range p.transports {
		t.CloseIdleConnections()
	}
}

// errNoBackend marks a split whose Service cannot be dialled yet; the client
// gets 503 so it may retry.
var errNoBackend = errors.New("no backend")

type backend struct {
	addr string
	h2c  bool
	self bool
}

// ServeHTTP routes one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := normalizeHost(r.Host)
	path := p.table.Load().Match(host, r)
	if path == nil {
		http.Error(w, fmt.Sprintf("no route for host %q", host), http.StatusNotFound)
		return
	}
	split := path.pick(p.intn)
	be, err := p.resolve(split)
	if err != nil {
		p.logger.Infow("kingress: backend unavailable", "host", host, "service", split.Backend().String(), zap.Error(err))
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if be.self {
		p.serveSelf(w, r, path, split)
		return
	}
	tg := &target{addr: be.addr, rewriteHost: path.RewriteHost}
	if split.AppendHeaders != nil {
		tg.headers = append(tg.headers, split.AppendHeaders)
	}
	if path.AppendHeaders != nil {
		tg.headers = append(tg.headers, path.AppendHeaders)
	}
	// The tracked body tells whether a failed attempt sent anything, and
	// ends a body of known length itself (see proxy.TrackedBody for the
	// standard library race that otherwise truncates responses).
	tg.body = proxy.TrackBody(r)
	r = r.WithContext(context.WithValue(r.Context(), targetKey{}, tg))
	rp := p.http1
	if be.h2c {
		rp = p.h2c
	}
	p.forward(w, r, rp, tg)
}

// forward sends r to tg, again after a short backoff while the dial fails
// before anything was sent: right after a revision becomes Ready, kube-proxy
// may program its ClusterIP a second later, and dials in that gap fail
// (refused, no route to host). Retries start only within the retry budget
// and end with the request's context.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy, tg *target) {
	tg.start = p.clk.Now()
	tg.wait = retryInitialWait
	for {
		tg.notSent = nil
		rp.ServeHTTP(w, r)
		if tg.notSent == nil {
			return
		}
		p.logger.Debugw("kingress: backend not reachable yet, retrying", "host", r.Host, "addr", tg.addr, "wait", tg.wait, zap.Error(tg.notSent))
		t := p.clk.NewTimer(tg.wait)
		select {
		case <-r.Context().Done():
			t.Stop()
			w.WriteHeader(499)
			return
		case <-t.C():
		}
		tg.wait = min(2*tg.wait, retryMaxWait)
	}
}

// serveSelf re-routes a request whose split points back at this ingress,
// with the rewritten Host and the headers appended so far.
func (p *Proxy) serveSelf(w http.ResponseWriter, r *http.Request, path *Path, split *Split) {
	hops, _ := r.Context().Value(hopsKey{}).(int)
	if hops >= maxSelfHops {
		p.logger.Warnw("kingress: routing loop through own load balancer", "host", r.Host, "service", split.Backend().String())
		http.Error(w, "routing loop", http.StatusLoopDetected)
		return
	}
	r2 := r.Clone(context.WithValue(r.Context(), hopsKey{}, hops+1))
	if path.RewriteHost != "" {
		r2.Host = path.RewriteHost
	}
	for _, hs := range []map[string]string{split.AppendHeaders, path.AppendHeaders} {
		for k, v := range hs {
			r2.Header.Set(k, v)
		}
	}
	p.ServeHTTP(w, r2)
}

// resolve maps a split to a dialable ClusterIP:port.
func (p *Proxy) resolve(s *Split) (backend, error) {
	return resolveBackend(p.services, p.self, s)
}

// resolveBackend is shared by the proxy (per request) and the reconciler
// (to hold an Ingress not-ready until its Services can be dialled).
func resolveBackend(services corelisters.ServiceLister, self map[string]bool, s *Split) (backend, error) {
	if services == nil {
		return backend{}, fmt.Errorf("%w: no service lister", errNoBackend)
	}
	svc, err := services.Services(s.Namespace).Get(s.Name)
	if apierrors.IsNotFound(err) {
		return backend{}, fmt.Errorf("%w: service %s/%s not found", errNoBackend, s.Namespace, s.Name)
	} else if err != nil {
		return backend{}, fmt.Errorf("%w: service %s/%s: %v", errNoBackend, s.Namespace, s.Name, err)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		if self[normalizeHost(svc.Spec.ExternalName)] {
			return backend{self: true}, nil
		}
		return backend{}, fmt.Errorf("%w: service %s/%s is ExternalName %q", errNoBackend, s.Namespace, s.Name, svc.Spec.ExternalName)
	}
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone {
		return backend{}, fmt.Errorf("%w: service %s/%s has no ClusterIP yet", errNoBackend, s.Namespace, s.Name)
	}
	sp := findPort(svc, s.Port)
	if sp == nil {
		return backend{}, fmt.Errorf("%w: service %s/%s has no port %s", errNoBackend, s.Namespace, s.Name, s.Port.String())
	}
	return backend{
		addr: net.JoinHostPort(ip, strconv.Itoa(int(sp.Port))),
		h2c:  isH2C(sp),
	}, nil
}

func findPort(svc *corev1.Service, port intstr.IntOrString) *corev1.ServicePort {
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		if port.Type == intstr.Int && sp.Port == port.IntVal ||
			port.Type == intstr.String && sp.Name == port.StrVal {
			return sp
		}
	}
	return nil
}

// isH2C follows Knative's convention: public Services name their HTTP/2
// port "http2" and set appProtocol kubernetes.io/h2c.
func isH2C(sp *corev1.ServicePort) bool {
	if sp.AppProtocol != nil {
		switch strings.ToLower(*sp.AppProtocol) {
		case "kubernetes.io/h2c", "h2c":
			return true
		}
	}
	switch strings.ToLower(sp.Name) {
	case "http2", "h2c":
		return true
	}
	return false
}

func selfSet(domains []string) map[string]bool {
	m := make(map[string]bool, len(domains))
	for _, d := range domains {
		m[normalizeHost(d)] = true
	}
	return m
}
