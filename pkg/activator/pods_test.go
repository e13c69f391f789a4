package activator

// Pod-level tests: the whole data plane (endpoints probing, throttler,
// handler, proxy) against real upstream queue-proxy pods in network
// namespaces. They skip unless run as root with THAW_QUEUE_PROXY set.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/test/podharness"
)

// podRevs is a RevisionSource for the endpoints manager and the handler.
type podRevs struct {
	mu    sync.Mutex
	info  *revisions.Info
	onUps []func(*revisions.Info)
}

func (p *podRevs) Get(ns, name string) (*revisions.Info, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.info != nil && p.info.ID.Namespace == ns && p.info.ID.Name == name {
		return p.info, nil
	}
	return nil, fmt.Errorf("%w: %s/%s", revisions.ErrNotFound, ns, name)
}
func (p *podRevs) OnUpsert(fn func(*revisions.Info))      { p.onUps = append(p.onUps, fn) }
func (p *podRevs) OnDelete(fn func(types.NamespacedName)) {}

var podRev = types.NamespacedName{Namespace: "default", Name: "rev"}

type podPlane struct {
	url  string
	kube *fake.Clientset
	thr  *throttler.Throttler
}

// startPodPlane runs the data plane for podRev with containerConcurrency cc.
func startPodPlane(t *testing.T, cc, queueDepth int) *podPlane {
	t.Helper()
	logger := zaptest.NewLogger(t).Sugar()
	info := &revisions.Info{ID: podRev, UID: "uid-1", ContainerConcurrency: cc, Timeout: time.Minute,
		ResponseStartTimeout: time.Minute, ProbeOptimisation: true}
	revs := &podRevs{}
	kube := fake.NewSimpleClientset()
	thr := throttler.New("10.0.0.1", throttler.Options{QueueDepth: queueDepth}, clock.RealClock{}, logger.Named("throttler"))
	tr := proxy.NewTransport(1000, 100)
	t.Cleanup(tr.CloseIdleConnections)
	mgr := endpoints.NewManager(kube, revs, thr, endpoints.Options{Transport: tr, Logger: logger.Named("endpoints")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { mgr.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if !mgr.WaitForSync(ctx) {
		t.Fatal("endpoints informers did not sync")
	}
	revs.mu.Lock()
	revs.info = info
	revs.mu.Unlock()
	for _, fn := range revs.onUps {
		fn(info)
	}
	thr.UpsertRevision(podRev, throttler.RevisionConfig{ContainerConcurrency: cc, QueueDepth: queueDepth})

	h := newChain(testConfig{Config: Config{
		Throttler:  thr,
		Proxy:      proxy.New(tr, logger.Named("proxy"), proxy.Options{}),
		IsNotSent:  func(err error) bool { return errors.Is(err, proxy.ErrNotSent) },
		QueueDepth: queueDepth,
		Logger:     logger,
	}, Revisions: revs})
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return &podPlane{url: s.URL, kube: kube, thr: thr}
}

// setPods writes the revision's private Endpoints as kube would: the pods'
// IPs, not yet marked ready (the activator probes them itself).
func (p *podPlane) setPods(t *testing.T, pods ...*podharness.Pod) {
	t.Helper()
	var addrs []corev1.EndpointAddress
	for _, pod := range pods {
		addrs = append(addrs, corev1.EndpointAddress{IP: pod.IP})
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: podRev.Namespace, Name: podRev.Name + "-private", Labels: map[string]string{
			endpoints.ServiceTypeLabel: "Private", endpoints.RevisionLabel: podRev.Name, endpoints.RevisionUIDLabel: "uid-1",
		}},
		Subsets: []corev1.EndpointSubset{{NotReadyAddresses: addrs,
			Ports: []corev1.EndpointPort{{Name: "http", Port: podharness.QueuePort}}}},
	}
	ctx := context.Background()
	if _, err := p.kube.CoreV1().Endpoints(podRev.Namespace).Update(ctx, ep, metav1.UpdateOptions{}); err != nil {
		if _, err := p.kube.CoreV1().Endpoints(podRev.Namespace).Create(ctx, ep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func (p *podPlane) get(t *testing.T, query string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, p.url+"/"+query, nil)
	req.Header.Set(proxy.RevisionHeader, podRev.Name)
	req.Header.Set(proxy.NamespaceHeader, podRev.Namespace)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitQueued(t *testing.T, thr *throttler.Throttler, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if q, _ := thr.Stats(podRev); q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d requests queued", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPodColdStart: requests wait while the only pod's app is down, and all
// complete once queue-proxy's probe passes, also over a link with 150 ms of
// round-trip time (upstream never completes past ~70 ms, #14202).
func TestPodColdStart(t *testing.T) {
	for _, rtt := range []time.Duration{0, 150 * time.Millisecond} {
		t.Run(fmt.Sprintf("rtt %v", rtt), func(t *testing.T) { testPodColdStart(t, rtt) })
	}
}

func testPodColdStart(t *testing.T, rtt time.Duration) {
	net := podharness.NewNetwork(t)
	pod := net.StartPod(t, podharness.PodOptions{DeferApp: true, Delay: rtt / 2})
	p := startPodPlane(t, 0, 0)
	p.setPods(t, pod)

	const n = 10
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() { c, _ := p.get(t, ""); codes <- c }()
	}
	waitQueued(t, p.thr, n)
	select {
	case c := <-codes:
		t.Fatalf("a request ended (%d) before the app started", c)
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	pod.StartApp(t)
	for i := 0; i < n; i++ {
		if c := <-codes; c != 200 {
			t.Fatalf("request after the cold start got %d\n%s", c, pod.Logs())
		}
	}
	t.Logf("all %d buffered requests answered %v after the app started", n, time.Since(start))
}

// TestPodActivatorOverload is upstream's TestActivatorOverload on real pods:
// CC=1, 100 concurrent requests over 10 pods, all 200.
func TestPodActivatorOverload(t *testing.T) {
	net := podharness.NewNetwork(t)
	var pods []*podharness.Pod
	for i := 0; i < 10; i++ {
		pods = append(pods, net.StartPod(t, podharness.PodOptions{ContainerConcurrency: 1}))
	}
	p := startPodPlane(t, 1, 0)
	p.setPods(t, pods...)
	deadline := time.Now().Add(30 * time.Second)
	for p.thr.Capacity(podRev) < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("capacity %d, want 10 once every pod is probed", p.thr.Capacity(podRev))
		}
		time.Sleep(5 * time.Millisecond)
	}
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, _ := p.get(t, "?sleep=50"); c != 200 {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of 100 requests were not 200", bad.Load())
	}
}

// TestPodOverloadPastQueueBound: one CC=1 pod held busy, a queue of 5: the
// rest answer 503 at once and the heap stays flat.
func TestPodOverloadPastQueueBound(t *testing.T) {
	net := podharness.NewNetwork(t)
	pod := net.StartPod(t, podharness.PodOptions{ContainerConcurrency: 1})
	p := startPodPlane(t, 1, 5)
	p.setPods(t, pod)
	deadline := time.Now().Add(30 * time.Second)
	for p.thr.Capacity(podRev) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("pod never routable")
		}
		time.Sleep(5 * time.Millisecond)
	}
	held := make(chan int, 6)
	for i := 0; i < 6; i++ {
		go func() { c, _ := p.get(t, "?sleep=1000"); held <- c }()
	}
	waitQueued(t, p.thr, 5)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	var rejected atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if c, _ := p.get(t, ""); c == 503 {
					rejected.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	growth := int64(heap()) - int64(before)
	t.Logf("heap %+d bytes over 500 requests past the bound", growth)
	if rejected.Load() != 500 || growth > 8<<20 {
		t.Fatalf("rejected %d of 500, heap growth %d", rejected.Load(), growth)
	}
	for i := 0; i < 6; i++ {
		if c := <-held; c != 200 {
			t.Fatalf("held request got %d", c)
		}
	}
}

// TestPodRefusingConnections: a pod that refuses connections (queue-proxy
// gone, TCP RST) costs no request: each is retried on the other pod.
func TestPodRefusingConnections(t *testing.T) {
	net := podharness.NewNetwork(t)
	good := net.StartPod(t, podharness.PodOptions{})
	bad := net.StartPod(t, podharness.PodOptions{})
	p := startPodPlane(t, 0, 0)
	p.setPods(t, good, bad)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b := p.thr.Capacity(podRev); b > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pods never routable")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Give the endpoints manager time to route both pods, then break one.
	for i := 0; i < 20; i++ {
		if c, _ := p.get(t, ""); c != 200 {
			t.Fatalf("warm-up request got %d", c)
		}
	}
	bad.SetRefusing()
	for i := 0; i < 50; i++ {
		if c, body := p.get(t, ""); c != 200 {
			t.Fatalf("request %d got %d %q with one pod refusing", i, c, body)
		}
	}
}
