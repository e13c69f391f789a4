package scraper

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "unsafe" // go:linkname to upstream's unexported sample size

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	_ "knative.dev/serving/pkg/autoscaler/metrics"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/wire"
)

//go:linkname upstreamSampleSize knative.dev/serving/pkg/autoscaler/metrics.populationMeanSampleSize
func upstreamSampleSize(population float64) float64

func TestSampleSize(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 4}, {6, 5}, {10, 7}, {100, 14}, {1000, 16}, {1 << 30, 16},
	} {
		if got := SampleSize(tc.n); got != tc.want {
			t.Errorf("SampleSize(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestSampleSizeMatchesUpstream(t *testing.T) {
	for n := -2; n <= 5000; n++ {
		if got, want := SampleSize(n), int(upstreamSampleSize(float64(n))); got != want {
			t.Fatalf("SampleSize(%d) = %d, upstream %d", n, got, want)
		}
	}
}

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const ns, rev = "ns", "rev"

// fakePod is one queue-proxy on loopback.
type fakePod struct {
	name  string
	age   time.Duration
	ready bool
	// handler answers /metrics; nil means the address refuses connections.
	handler http.HandlerFunc
	hits    atomic.Int64
	addr    string
	srv     *httptest.Server // nil when the address refuses connections
}

func statHandler(s wire.Stat) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != protobufMIME || r.URL.Path != "/metrics" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", protobufMIME)
		_, _ = w.Write(wire.MarshalStat(&s))
	}
}

func concPod(name string, age time.Duration, conc float64) *fakePod {
	return &fakePod{name: name, age: age, ready: true, handler: statHandler(wire.Stat{
		PodName: name, AverageConcurrentRequests: conc, RequestCount: 2 * conc, ProcessUptime: age.Seconds(),
	})}
}

type env struct {
	f      *Factory
	pods   map[string]*fakePod
	idx    cache.Indexer
	reg    *prometheus.Registry
	clock  *clocktesting.FakeClock
	mesh   string
	svcURL string
}

func newEnv(t *testing.T, pods ...*fakePod) *env {
	t.Helper()
	e := &env{pods: map[string]*fakePod{}, reg: prometheus.NewRegistry(), clock: clocktesting.NewFakeClock(now),
		mesh: MeshAuto}
	e.idx = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		e.add(t, p)
	}
	e.f = NewFactory(Options{
		Pods: corev1listers.NewPodLister(e.idx),
		PodAddress: func(p *corev1.Pod) string {
			return e.pods[p.Name].addr
		},
		ServiceURL: func(target, ns string) string { return e.svcURL },
		MeshMode:   func() string { return e.mesh },
		Clock:      e.clock,
		Logger:     zaptest.NewLogger(t).Sugar(),
		Registerer: e.reg,
	})
	return e
}

func (e *env) add(t *testing.T, p *fakePod) {
	t.Helper()
	if p.handler != nil {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.hits.Add(1)
			p.handler(w, r)
		}))
		t.Cleanup(srv.Close)
		p.srv = srv
		p.addr = strings.TrimPrefix(srv.URL, "http://")
	} else {
		// A closed listener: connection refused.
		srv := httptest.NewServer(http.NotFoundHandler())
		p.addr = strings.TrimPrefix(srv.URL, "http://")
		srv.Close()
	}
	e.pods[p.name] = p
	ready := corev1.ConditionTrue
	if !p.ready {
		ready = corev1.ConditionFalse
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: map[string]string{
			revisionLabel: rev, serviceLabel: "svc", configurationLabel: "cfg"}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      "127.0.0.1",
			StartTime:  &metav1.Time{Time: now.Add(-p.age)},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}},
		},
	}
	if err := e.idx.Add(pod); err != nil {
		t.Fatal(err)
	}
}

func (e *env) scraper(t *testing.T) collector.Scraper {
	t.Helper()
	s, err := e.f.New(types.NamespacedName{Namespace: ns, Name: rev}, collector.Config{ScrapeTarget: rev + "-private"})
	if err != nil || s == nil {
		t.Fatalf("New = %v, %v", s, err)
	}
	return s
}

const window = time.Minute

func TestScrape(t *testing.T) {
	old, young := 2*window, time.Second
	refused := &fakePod{name: "refused", age: old, ready: true}
	pods := func(prefix string, n int, age time.Duration, conc float64) []*fakePod {
		var out []*fakePod
		for i := range n {
			out = append(out, concPod(prefix+string(rune('a'+i)), age, conc))
		}
		return out
	}
	cat := func(ps ...[]*fakePod) []*fakePod {
		var out []*fakePod
		for _, p := range ps {
			out = append(out, p...)
		}
		return out
	}
	notReady := concPod("notready", old, 1000)
	notReady.ready = false

	for _, tc := range []struct {
		name     string
		pods     []*fakePod
		wantConc float64 // revision total
		wantErr  error
		failures map[string]float64
	}{
		{name: "no pods", pods: nil},
		{name: "only a not-ready pod", pods: []*fakePod{notReady}},
		{name: "three pods all scraped", pods: pods("o", 3, old, 2), wantConc: 6},
		{name: "10 pods, sample 7, extrapolated", pods: pods("o", 10, old, 3), wantConc: 30},
		{name: "old pods preferred over young", pods: cat(pods("o", 7, old, 1), pods("y", 3, young, 100)),
			wantConc: 10},
		{name: "young pods fill up the sample", pods: cat(pods("o", 2, old, 1), pods("y", 3, young, 1)),
			wantConc: 5},
		{name: "not-ready pod ignored", pods: cat(pods("o", 3, old, 2), []*fakePod{notReady}), wantConc: 6},
		{name: "too few answers", pods: cat(pods("o", 3, old, 2), []*fakePod{refused}),
			wantErr: ErrPodsExhausted, failures: map[string]float64{reasonUnreachable: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.pods...)
			st, err := e.scraper(t).Scrape(context.Background(), window)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				for r, want := range tc.failures {
					if got := counterValue(t, e.f.failures.WithLabelValues(r)); got != want {
						t.Errorf("failures[%s] = %v, want %v", r, got, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Scrape: %v", err)
			}
			if tc.wantConc == 0 {
				if st != (wire.Stat{}) {
					t.Fatalf("stat = %+v, want zero", st)
				}
				if n := seriesCount(e.f.duration); n != 0 {
					t.Errorf("duration observed %d series, want none when nothing was scraped", n)
				}
				return
			}
			if st.PodName != PodName || st.AverageConcurrentRequests != tc.wantConc ||
				st.RequestCount != 2*tc.wantConc {
				t.Fatalf("stat = %+v, want conc %v", st, tc.wantConc)
			}
			if n := seriesCount(e.f.duration); n != 1 {
				t.Errorf("duration series = %d, want 1", n)
			}
		})
	}
}

// With 12 ready pods the sample is 9 but only 7 answer: the scrape must
// fail (upstream needs a complete sample) and count every bad pod once.
func TestScrapeSkipsAndCountsBadPods(t *testing.T) {
	old := 2 * window
	var ps []*fakePod
	for i := range 9 {
		ps = append(ps, concPod("good"+string(rune('a'+i)), old, 2))
	}
	ps = append(ps,
		&fakePod{name: "refused", age: old, ready: true},
		&fakePod{name: "garbage", age: old, ready: true, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", protobufMIME)
			_, _ = w.Write([]byte{0xff, 0xff, 0xff, 0xff})
		}},
		&fakePod{name: "text", age: old, ready: true, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("# HELP"))
		}},
	)
	e := newEnv(t, ps...)
	// 12 pods → sample 9; 9 good pods exist, so all 9 workers succeed after
	// skipping the bad ones they meet.
	st, err := e.scraper(t).Scrape(context.Background(), window)
	if err != nil {
		t.Fatalf("Scrape: %v", err)
	}
	if want := 2.0 * 12; st.AverageConcurrentRequests != want {
		t.Fatalf("conc = %v, want %v", st.AverageConcurrentRequests, want)
	}
	var failed float64
	for _, r := range []string{reasonUnreachable, reasonGarbage, reasonContentType, reasonStatus} {
		failed += counterValue(t, e.f.failures.WithLabelValues(r))
	}
	// Each bad pod is tried at most once per scrape.
	if failed > 3 {
		t.Fatalf("failures = %v, want ≤ 3", failed)
	}
}

func TestMeshFallback(t *testing.T) {
	old := 2 * window
	meshErr := func(w http.ResponseWriter, r *http.Request) { http.Error(w, "mesh", http.StatusServiceUnavailable) }
	pods := []*fakePod{
		{name: "a", age: old, ready: true, handler: meshErr},
		{name: "b", age: old, ready: true, handler: meshErr},
		{name: "c", age: old, ready: true, handler: meshErr},
		{name: "d", age: old, ready: true, handler: meshErr},
	}
	e := newEnv(t, pods...)
	var (
		mu   sync.Mutex
		next int
		hits atomic.Int64
	)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		mu.Lock()
		name := []string{"a", "b", "c", "d"}[next%4]
		next++
		mu.Unlock()
		statHandler(wire.Stat{PodName: name, AverageConcurrentRequests: 5, ProcessUptime: 3600})(w, r)
	}))
	t.Cleanup(svc.Close)
	e.svcURL = svc.URL + "/metrics"
	s := e.scraper(t)

	st, err := s.Scrape(context.Background(), window)
	if err != nil {
		t.Fatalf("Scrape: %v", err)
	}
	if st.AverageConcurrentRequests != 20 {
		t.Fatalf("conc = %v, want 20", st.AverageConcurrentRequests)
	}
	// Cancelled scrapes may still reach a pod after Scrape returned: close the
	// pods (Close waits for their handlers) before counting. A scraper that
	// was not sticky would now meet refused connections, which never fall
	// back, so the second Scrape below would fail.
	direct := int64(0)
	for _, p := range pods {
		p.srv.Close()
		direct += p.hits.Load()
	}
	// Once one worker runs out of pods the others are cancelled, so not
	// every pod need be hit.
	if direct < 1 || direct > 4 {
		t.Fatalf("direct pod hits = %d, want 1..4", direct)
	}
	// Sticky: the next scrape goes through the service only.
	if _, err := s.Scrape(context.Background(), window); err != nil {
		t.Fatalf("second Scrape: %v", err)
	}
	after := int64(0)
	for _, p := range pods {
		after += p.hits.Load()
	}
	if after != direct {
		t.Fatalf("direct pod hits after fallback = %d, want %d", after, direct)
	}

	// mesh-compatibility-mode disabled never falls back.
	e2 := newEnv(t, &fakePod{name: "x", age: old, ready: true, handler: meshErr})
	e2.mesh = MeshDisabled
	e2.svcURL = svc.URL + "/metrics"
	before := hits.Load()
	if _, err := e2.scraper(t).Scrape(context.Background(), window); !errors.Is(err, ErrPodsExhausted) {
		t.Fatalf("disabled mode err = %v, want ErrPodsExhausted", err)
	}
	if hits.Load() != before {
		t.Fatal("disabled mode scraped the service")
	}
}

func TestNoFallbackOnNonMeshError(t *testing.T) {
	e := newEnv(t, &fakePod{name: "a", age: 2 * window, ready: true}) // refused
	var hits atomic.Int64
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(svc.Close)
	e.svcURL = svc.URL
	if _, err := e.scraper(t).Scrape(context.Background(), window); !errors.Is(err, ErrPodsExhausted) {
		t.Fatalf("err = %v, want ErrPodsExhausted", err)
	}
	if hits.Load() != 0 {
		t.Fatal("fell back to the service after a non-mesh error")
	}
}

// The bound on scrapes in flight holds across revisions.
func TestGlobalBound(t *testing.T) {
	const bound = 3
	var inFlight, peak atomic.Int64
	release := make(chan struct{})
	blocking := func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		inFlight.Add(-1)
		statHandler(wire.Stat{AverageConcurrentRequests: 1})(w, r)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	addrs := map[string]string{}
	for r := range 2 {
		for i := range 5 {
			name := string(rune('a'+r)) + string(rune('0'+i))
			srv := httptest.NewServer(http.HandlerFunc(blocking))
			t.Cleanup(srv.Close)
			addrs[name] = strings.TrimPrefix(srv.URL, "http://")
			_ = idx.Add(&corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
					Labels: map[string]string{revisionLabel: "rev" + string(rune('0'+r))}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
					StartTime:  &metav1.Time{Time: now.Add(-time.Hour)},
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			})
		}
	}
	f := NewFactory(Options{
		Pods:        corev1listers.NewPodLister(idx),
		PodAddress:  func(p *corev1.Pod) string { return addrs[p.Name] },
		MaxInFlight: bound,
		Clock:       clocktesting.NewFakeClock(now),
	})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for r := range 2 {
		s, _ := f.New(types.NamespacedName{Namespace: ns, Name: "rev" + string(rune('0'+r))},
			collector.Config{ScrapeTarget: "x"})
		wg.Go(func() {
			st, err := s.Scrape(context.Background(), window)
			if err == nil && st.AverageConcurrentRequests != 5 {
				err = errors.New("wrong stat")
			}
			errs <- err
		})
	}
	// Wait until the bound is saturated. A request over the bound, whenever it arrives, shows in the
	// peak checked once everything is done, so no short wait for one here.
	testutil.Eventually(t, "the bound saturated", func() bool { return inFlight.Load() >= bound })
	if got := inFlight.Load(); got != bound {
		t.Errorf("in flight = %d, want %d", got, bound)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p > bound {
		t.Fatalf("peak in flight = %d, bound %d", p, bound)
	}
}

func TestScrapeCanceled(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	e := newEnv(t, &fakePod{name: "slow", age: 2 * window, ready: true, handler: func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sc := e.scraper(t)
	go func() {
		_, err := sc.Scrape(ctx, window)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Scrape did not return after cancel")
	}
}

func TestNoScrapeTarget(t *testing.T) {
	e := newEnv(t)
	s, err := e.f.New(types.NamespacedName{Namespace: ns, Name: rev}, collector.Config{})
	if s != nil || err != nil {
		t.Fatalf("New without target = %v, %v; want nil, nil", s, err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
}
