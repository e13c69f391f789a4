package kpa

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/pkg/network"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
)

// Probe headers and expectations: the activator answers this probe with
// 200 "activator"; a queue-proxy at the same address answers 400, so a
// success means the network really routes the revision to the activator.
const (
	probeHeader    = "K-Network-Probe"
	probeValue     = "activator"
	probeUserAgent = "Knative-Autoscaling-Probe"
	probeTimeout   = 5 * time.Second
	// asyncProbePeriod and asyncProbeTimeout pace the background probe
	// started when the synchronous one failed.
	asyncProbePeriod  = time.Second
	asyncProbeTimeout = 45 * time.Second
	// probedRecheck re-enqueues the PA once the background probe ended.
	probedRecheck = time.Second
)

// Prober checks that url is served by the activator.
type Prober interface {
	Probe(ctx context.Context, url string) (bool, error)
}

// HTTPProber probes over HTTP.
type HTTPProber struct {
	Client *http.Client
}

// NewHTTPProber returns an HTTPProber using client, or a client without
// keep-alives (each probe must see the current routing) when nil.
func NewHTTPProber(client *http.Client) *HTTPProber {
	if client == nil {
		client = &http.Client{Timeout: probeTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	return &HTTPProber{Client: client}
}

// Probe implements Prober.
func (p *HTTPProber) Probe(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set(probeHeader, probeValue)
	req.Header.Set("User-Agent", probeUserAgent)
	resp, err := p.Client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("probe %s: status %d", url, resp.StatusCode)
	}
	if string(body) != probeValue {
		return false, fmt.Errorf("probe %s: unexpected body %q", url, body)
	}
	return true, nil
}

// DefaultClusterDomain is the cluster's DNS domain found the way upstream's
// components find it (knative.dev/pkg/network): CLUSTER_DOMAIN, else the
// "svc.<domain>" search entry of /etc/resolv.conf, else cluster.local. A
// cluster with another domain would otherwise never see a probe succeed, and
// with TBC ≠ −1 its revisions would never reach zero.
func DefaultClusterDomain() string { return network.GetClusterDomainName() }

// probeURL is the public service of the PA: the activator's health path
// on the port of the revision's protocol.
func (r *Reconciler) probeURL(pa *autoscalingv1alpha1.PodAutoscaler) string {
	host := pa.Status.ServiceName + "." + pa.Namespace + ".svc." + r.d.ClusterDomain
	port := networking.ServicePort(pa.Spec.ProtocolType)
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/healthz"
}

// asyncProber probes in the background, at most one probe loop per PA, and
// re-enqueues the PA when the loop ends (success or timeout).
type asyncProber struct {
	prober  Prober
	clock   clock.WithTicker
	enqueue func(types.NamespacedName, time.Duration)
	logger  *zap.SugaredLogger

	mu      sync.Mutex
	ctx     context.Context
	running map[types.NamespacedName]*probeLoop
	wg      sync.WaitGroup
}

func newAsyncProber(p Prober, clk clock.WithTicker, enqueue func(types.NamespacedName, time.Duration),
	logger *zap.SugaredLogger) *asyncProber {
	return &asyncProber{prober: p, clock: clk, enqueue: enqueue, logger: logger,
		running: map[types.NamespacedName]*probeLoop{}}
}

// start sets the context the probe loops run under.
func (a *asyncProber) start(ctx context.Context) {
	a.mu.Lock()
	a.ctx = ctx
	a.mu.Unlock()
}

// offer starts a probe loop for key unless one runs already.
func (a *asyncProber) offer(key types.NamespacedName, url string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx == nil || a.ctx.Err() != nil {
		return false
	}
	if _, ok := a.running[key]; ok {
		return false
	}
	ctx, cancel := context.WithCancel(a.ctx)
	l := &probeLoop{cancel: cancel}
	a.running[key] = l
	a.wg.Add(1)
	go a.loop(ctx, l, key, url)
	return true
}

// probeLoop is one running loop; its identity tells a finished loop from a
// newer one for the same key.
type probeLoop struct{ cancel context.CancelFunc }

func (a *asyncProber) loop(ctx context.Context, l *probeLoop, key types.NamespacedName, url string) {
	defer a.wg.Done()
	defer func() {
		l.cancel()
		a.mu.Lock()
		if a.running[key] == l {
			delete(a.running, key)
		}
		a.mu.Unlock()
	}()
	ticker := a.clock.NewTicker(asyncProbePeriod)
	defer ticker.Stop()
	deadline := a.clock.Now().Add(asyncProbeTimeout)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		ok, err := a.prober.Probe(pctx, url)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if ok || !a.clock.Now().Before(deadline) {
			a.logger.Infow("Activator probe done", "key", key.String(), "success", ok, zap.Error(err))
			a.enqueue(key, probedRecheck)
			return
		}
	}
}

// cancel stops key's probe loop, if any.
func (a *asyncProber) cancel(key types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if l, ok := a.running[key]; ok {
		l.cancel()
		delete(a.running, key)
	}
}

// wait waits for every probe loop to end (after the Run context ended).
func (a *asyncProber) wait() { a.wg.Wait() }

// inFlight reports whether key has a probe loop.
func (a *asyncProber) inFlight(key types.NamespacedName) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.running[key]
	return ok
}
