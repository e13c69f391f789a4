// Package scraper reads the queue-proxy stats of a revision's pods: every
// scrape asks a statistically sized sample of the ready pods for their
// protobuf Stat at :9090/metrics and extrapolates the sum to the whole
// revision. All revisions share one bound on scrapes in flight, so a cluster
// with many revisions cannot open an unbounded number of connections at once
// (upstream knative/serving#8377).
package scraper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// Label keys of Knative pods.
const (
	revisionLabel      = "serving.knative.dev/revision"
	serviceLabel       = "serving.knative.dev/service"
	configurationLabel = "serving.knative.dev/configuration"
)

// Defaults.
const (
	// MetricsPort is queue-proxy's autoscaling metrics port.
	MetricsPort = 9090
	// DefaultTimeout bounds one scrape request.
	DefaultTimeout = 3 * time.Second
	// DefaultMaxInFlight bounds the scrapes in flight across all revisions.
	DefaultMaxInFlight = 256
	// BodyLimit bounds how much of a response is read: a Stat with a
	// 253-byte pod name is under 330 bytes, so anything longer is garbage.
	BodyLimit = 512
	// PodName is the PodName of the revision-wide stat a scrape returns.
	PodName = "service-scraper"
	// serviceTries bounds how often one worker asks the service for a
	// pod not seen yet in this scrape.
	serviceTries = 10
	protobufMIME = "application/protobuf"
)

// Mesh compatibility modes (config-network mesh-compatibility-mode).
const (
	MeshAuto     = "auto"
	MeshEnabled  = "enabled"
	MeshDisabled = "disabled"
)

var (
	// ErrNoEndpoints is returned when the pods cannot be listed.
	ErrNoEndpoints = errors.New("failed to get endpoints")
	// ErrDidNotReceiveStat is returned when the service path keeps
	// answering with pods already sampled.
	ErrDidNotReceiveStat = errors.New("did not receive stat from an unscraped pod")
	// ErrPodsExhausted is returned when too few pods answered for a sample.
	ErrPodsExhausted = errors.New("pods exhausted")
	// errMeshOnly marks that every pod failed with a 502/503, which is what
	// a mesh sidecar answers for direct pod addressing.
	errMeshOnly = fmt.Errorf("%w: all pod scrapes returned 502/503", ErrPodsExhausted)
)

// Failure reasons, the label of the failure counter.
const (
	reasonUnreachable = "unreachable"
	reasonStatus      = "status"
	reasonContentType = "content_type"
	reasonGarbage     = "garbage"
)

// statusError is a non-2xx answer.
type statusError struct {
	url  string
	code int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("GET %s returned HTTP status %d", e.url, e.code)
}

// mightBeMesh reports whether err is what a mesh sidecar answers when a pod
// is addressed directly.
func mightBeMesh(err error) bool {
	var se *statusError
	return errors.As(err, &se) && (se.code == http.StatusBadGateway || se.code == http.StatusServiceUnavailable)
}

// Options configures a Factory.
type Options struct {
	// Pods lists the pods (a lister filtered to Knative pods).
	Pods corev1listers.PodLister
	// Client scrapes pods directly; keep-alive. Nil: a client with
	// DefaultTimeout.
	Client *http.Client
	// MeshClient scrapes through the private service; without keep-alive,
	// so that successive requests reach different pods. Nil: one with
	// keep-alives disabled and DefaultTimeout.
	MeshClient *http.Client
	// PodAddress returns "host:port" to scrape for a pod. Nil: podIP:9090.
	PodAddress func(*corev1.Pod) string
	// ServiceURL returns the URL to scrape through the service. Nil:
	// http://<target>.<ns>:9090/metrics.
	ServiceURL func(target, namespace string) string
	// MeshMode returns the current mesh-compatibility-mode; nil means auto.
	MeshMode func() string
	// PassthroughLB returns enable-mesh-pod-addressability; nil means off.
	PassthroughLB func() bool
	// MaxInFlight bounds concurrent scrape requests across all
	// revisions; 0 means DefaultMaxInFlight.
	MaxInFlight int
	Clock       clock.PassiveClock
	Logger      *zap.SugaredLogger
	// Registerer receives the scrape duration histogram and the failure
	// counter; nil registers nothing.
	Registerer prometheus.Registerer
	// Shuffle permutes n elements; nil uses math/rand/v2.
	Shuffle func(n int, swap func(i, j int))
}

// Factory makes the scrapers of all revisions; they share its clients,
// bound and metrics.
type Factory struct {
	opts     Options
	sem      chan struct{}
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
}

// NewFactory returns a Factory.
func NewFactory(opts Options) *Factory {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: DefaultTimeout, Transport: &http.Transport{
			MaxIdleConns: 1000, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second,
		}}
	}
	if opts.MeshClient == nil {
		opts.MeshClient = &http.Client{Timeout: DefaultTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	if opts.PodAddress == nil {
		opts.PodAddress = func(p *corev1.Pod) string {
			return joinHostPort(p.Status.PodIP, MetricsPort)
		}
	}
	if opts.ServiceURL == nil {
		opts.ServiceURL = func(target, ns string) string {
			return "http://" + target + "." + ns + ":" + strconv.Itoa(MetricsPort) + "/metrics"
		}
	}
	if opts.MeshMode == nil {
		opts.MeshMode = func() string { return MeshAuto }
	}
	if opts.PassthroughLB == nil {
		opts.PassthroughLB = func() bool { return false }
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	if opts.Shuffle == nil {
		opts.Shuffle = rand.Shuffle
	}
	f := &Factory{
		opts: opts,
		sem:  make(chan struct{}, opts.MaxInFlight),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kn_autoscaler_scrape_duration_seconds",
			Help:    "The duration of scraping the revision",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10},
		}, []string{"k8s_namespace_name", "kn_service_name", "kn_configuration_name"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thaw_autoscaler_scrape_failures_total",
			Help: "Pod scrapes that failed and were skipped, by reason.",
		}, []string{"reason"}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(f.duration, f.failures)
	}
	return f
}

func joinHostPort(ip string, port int) string {
	// IPv6 pod IPs need brackets.
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			return "[" + ip + "]:" + strconv.Itoa(port)
		}
	}
	return ip + ":" + strconv.Itoa(port)
}

// New is a collector.ScraperFactory: it returns the scraper of key, or nil
// when cfg has no scrape target.
func (f *Factory) New(key types.NamespacedName, cfg collector.Config) (collector.Scraper, error) {
	if cfg.ScrapeTarget == "" {
		return nil, nil
	}
	return &Scraper{
		f:          f,
		key:        key,
		target:     cfg.ScrapeTarget,
		selector:   labels.SelectorFromSet(labels.Set{revisionLabel: key.Name}),
		serviceURL: f.opts.ServiceURL(cfg.ScrapeTarget, key.Namespace),
		host:       cfg.ScrapeTarget + "." + key.Namespace,
	}, nil
}

// Scraper scrapes one revision. Scrape is called by one goroutine at a time
// (the collector's scrape loop).
type Scraper struct {
	f          *Factory
	key        types.NamespacedName
	target     string
	selector   labels.Selector
	serviceURL string
	host       string
	// podsUnaddressable becomes true once the service path worked after
	// every pod failed like a mesh; it sticks, as upstream's.
	podsUnaddressable atomic.Bool
}

var _ collector.Scraper = (*Scraper)(nil)

// SampleSize is how many of population pods are scraped: all up to 3, then
// the size that estimates the mean with 95% confidence and a margin of
// error of 5 for a variance of 100, corrected for the finite population.
func SampleSize(population int) int {
	if population <= 3 {
		return max(population, 0)
	}
	const z2 = 1.96 * 1.96
	const s = z2 * 100 / (5 * 5) // 15.3664
	p := float64(population)
	return int(math.Ceil(p * s / (p + s - 1)))
}

// Scrape returns the revision-wide stat, or a zero Stat and nil when the
// revision has no ready pods.
func (s *Scraper) Scrape(ctx context.Context, stableWindow time.Duration) (stat wire.Stat, err error) {
	start := s.f.opts.Clock.Now()
	var svc, cfg string
	defer func() {
		if stat == (wire.Stat{}) && err == nil {
			return // scaled to zero: nothing was scraped
		}
		s.f.duration.WithLabelValues(s.key.Namespace, svc, cfg).
			Observe(s.f.opts.Clock.Since(start).Seconds())
	}()

	pods, err := s.f.opts.Pods.Pods(s.key.Namespace).List(s.selector)
	if err != nil {
		return wire.Stat{}, fmt.Errorf("%w: %w", ErrNoEndpoints, err)
	}
	ready := readyPods(pods)
	if len(ready) > 0 {
		svc, cfg = ready[0].Labels[serviceLabel], ready[0].Labels[configurationLabel]
	}

	switch s.f.opts.MeshMode() {
	case MeshEnabled:
		return s.scrapeService(ctx, len(ready), stableWindow)
	case MeshDisabled:
		return s.scrapePods(ctx, ready, stableWindow)
	}
	passthrough := s.f.opts.PassthroughLB()
	if !s.podsUnaddressable.Load() || passthrough {
		stat, err := s.scrapePods(ctx, ready, stableWindow)
		if !errors.Is(err, errMeshOnly) || passthrough {
			return stat, err
		}
	}
	stat, err = s.scrapeService(ctx, len(ready), stableWindow)
	if err == nil && !s.podsUnaddressable.Swap(true) {
		s.f.opts.Logger.Infow("Pods are not addressable directly; scraping through the service",
			"key", s.key.String())
	}
	return stat, err
}

// readyPods keeps the Running, Ready, not terminating pods with an IP.
func readyPods(pods []*corev1.Pod) []*corev1.Pod {
	out := pods[:0:0]
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				if c.Status == corev1.ConditionTrue {
					out = append(out, p)
				}
				break
			}
		}
	}
	return out
}

// scrapePods scrapes a sample of the pods directly. Old pods (started at
// least a stable window ago) are preferred, as their stats cover the whole
// window; young pods are the backup.
func (s *Scraper) scrapePods(ctx context.Context, ready []*corev1.Pod, window time.Duration) (wire.Stat, error) {
	total := len(ready)
	if total == 0 {
		return wire.Stat{}, nil
	}
	now := s.f.opts.Clock.Now()
	var old, young []*corev1.Pod
	for _, p := range ready {
		if p.Status.StartTime != nil && now.Sub(p.Status.StartTime.Time) >= window {
			old = append(old, p)
		} else {
			young = append(young, p)
		}
	}
	n := SampleSize(total)
	if len(old) < n {
		// Every old pod is used; which young ones fill up is random.
		s.f.opts.Shuffle(len(young), func(i, j int) { young[i], young[j] = young[j], young[i] })
	} else {
		s.f.opts.Shuffle(len(old), func(i, j int) { old[i], old[j] = old[j], old[i] })
	}
	order := append(old, young...)

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next        atomic.Int64
		nonMesh     atomic.Bool
		exhausted   atomic.Bool
		mu          sync.Mutex
		sum         wire.Stat
		got         int
		wg          sync.WaitGroup
		passthrough = s.f.opts.PassthroughLB()
	)
	next.Store(-1)
	for range n {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i >= len(order) || ctx.Err() != nil {
					exhausted.Store(true)
					cancel() // the sample cannot be completed; stop the others
					return
				}
				p := order[i]
				url := "http://" + s.f.opts.PodAddress(p) + "/metrics"
				st, err := s.get(ctx, s.f.opts.Client, url, passthrough)
				if err == nil {
					mu.Lock()
					add(&sum, &st)
					got++
					mu.Unlock()
					return
				}
				if ctx.Err() != nil {
					exhausted.Store(true)
					return
				}
				if !mightBeMesh(err) {
					nonMesh.Store(true)
				}
				s.f.opts.Logger.Infow("Failed scraping pod", "key", s.key.String(), "pod", p.Name, zap.Error(err))
			}
		})
	}
	wg.Wait()
	if err := parent.Err(); err != nil {
		return wire.Stat{}, err
	}
	if exhausted.Load() {
		// Upstream's rule: the sample must be complete, else no stat.
		switch {
		case got > 0:
			// No counts in the message: it becomes the Metric's status
			// message, which should not change on every scrape.
			return wire.Stat{}, fmt.Errorf("%w: too few pods answered for a sample of %d", ErrPodsExhausted, n)
		case nonMesh.Load():
			return wire.Stat{}, fmt.Errorf("%w: no pod answered", ErrPodsExhausted)
		default:
			return wire.Stat{}, errMeshOnly
		}
	}
	return extrapolate(sum, n, total), nil
}

// scrapeService scrapes through the private service, for meshes where pods
// are not addressable: each worker keeps asking until it gets a pod not
// sampled yet in this scrape. Pods younger than the window (by their
// ProcessUptime) only fill up the sample.
func (s *Scraper) scrapeService(ctx context.Context, ready int, window time.Duration) (wire.Stat, error) {
	if ready == 0 {
		return wire.Stat{}, nil
	}
	n := SampleSize(ready)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		seen     = make(map[string]bool, n)
		old      []wire.Stat
		young    []wire.Stat
		firstErr error
		wg       sync.WaitGroup
	)
	cutoff := window.Seconds()
	for range n {
		wg.Go(func() {
			for try := 1; ; try++ {
				st, err := s.get(ctx, s.f.opts.MeshClient, s.serviceURL, false)
				mu.Lock()
				if err == nil && seen[st.PodName] {
					err = ErrDidNotReceiveStat
				}
				if err != nil {
					if try >= serviceTries || ctx.Err() != nil {
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					mu.Unlock()
					continue
				}
				seen[st.PodName] = true
				if st.ProcessUptime >= cutoff {
					old = append(old, st)
					mu.Unlock()
					return
				}
				full := len(young) >= n
				if !full {
					young = append(young, st)
				}
				mu.Unlock()
				if full {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(old)+len(young) < n || (firstErr != nil && !errors.Is(firstErr, ErrDidNotReceiveStat)) {
		if firstErr == nil {
			firstErr = ErrDidNotReceiveStat
		}
		return wire.Stat{}, fmt.Errorf("unsuccessful scrape, sampleSize=%d: %w", n, firstErr)
	}
	var sum wire.Stat
	for i := range old {
		add(&sum, &old[i])
	}
	for i := 0; i < n-len(old); i++ {
		add(&sum, &young[i])
	}
	return extrapolate(sum, n, ready), nil
}

func add(dst, src *wire.Stat) {
	dst.AverageConcurrentRequests += src.AverageConcurrentRequests
	dst.AverageProxiedConcurrentRequests += src.AverageProxiedConcurrentRequests
	dst.RequestCount += src.RequestCount
	dst.ProxiedRequestCount += src.ProxiedRequestCount
}

// extrapolate turns the sum over a sample of n pods into the revision total
// over total pods, in upstream's order of operations (divide, then multiply).
func extrapolate(sum wire.Stat, n, total int) wire.Stat {
	sn, t := float64(n), float64(total)
	return wire.Stat{
		PodName:                          PodName,
		AverageConcurrentRequests:        sum.AverageConcurrentRequests / sn * t,
		AverageProxiedConcurrentRequests: sum.AverageProxiedConcurrentRequests / sn * t,
		RequestCount:                     sum.RequestCount / sn * t,
		ProxiedRequestCount:              sum.ProxiedRequestCount / sn * t,
	}
}

// get fetches and decodes one Stat, holding a slot of the global bound
// while the request is in flight.
func (s *Scraper) get(ctx context.Context, client *http.Client, url string, passthrough bool) (wire.Stat, error) {
	select {
	case s.f.sem <- struct{}{}:
	case <-ctx.Done():
		return wire.Stat{}, ctx.Err()
	}
	defer func() { <-s.f.sem }()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return wire.Stat{}, err
	}
	req.Header.Set("Accept", protobufMIME)
	if passthrough {
		req.Host = s.host
		req.Header.Set("Knative-Direct-Lb", "true")
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			s.f.failures.WithLabelValues(reasonUnreachable).Inc()
		}
		return wire.Stat{}, err
	}
	defer func() {
		// Drain a little so the connection can be reused; never much.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, BodyLimit))
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		s.f.failures.WithLabelValues(reasonStatus).Inc()
		return wire.Stat{}, &statusError{url: url, code: resp.StatusCode}
	}
	if ct := resp.Header.Get("Content-Type"); ct != protobufMIME {
		s.f.failures.WithLabelValues(reasonContentType).Inc()
		return wire.Stat{}, fmt.Errorf("GET %s: unsupported content type %q", url, ct)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, BodyLimit+1))
	if err != nil {
		s.f.failures.WithLabelValues(reasonUnreachable).Inc()
		return wire.Stat{}, fmt.Errorf("GET %s: reading body: %w", url, err)
	}
	if len(body) > BodyLimit {
		s.f.failures.WithLabelValues(reasonGarbage).Inc()
		return wire.Stat{}, fmt.Errorf("GET %s: body exceeds %d bytes", url, BodyLimit)
	}
	st, err := wire.UnmarshalStat(body)
	if err == nil && !finite(&st) {
		err = errors.New("non-finite value")
	}
	if err != nil {
		s.f.failures.WithLabelValues(reasonGarbage).Inc()
		return wire.Stat{}, fmt.Errorf("GET %s: decoding stat: %w", url, err)
	}
	return st, nil
}

func finite(s *wire.Stat) bool {
	for _, f := range [...]float64{s.AverageConcurrentRequests, s.AverageProxiedConcurrentRequests,
		s.RequestCount, s.ProxiedRequestCount, s.ProcessUptime} {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return false
		}
	}
	return true
}
