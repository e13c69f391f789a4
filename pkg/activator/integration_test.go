package activator

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

// realActivator serves the handler chain with the real throttler and proxy.
func realActivator(t *testing.T, cc, queueDepth int) (*httptest.Server, *throttler.Throttler) {
	t.Helper()
	logger := zaptest.NewLogger(t).Sugar()
	thr := throttler.New("10.0.0.1", throttler.Options{QueueDepth: queueDepth}, clock.RealClock{}, logger)
	tr := proxy.NewTransport(1000, 100)
	t.Cleanup(tr.CloseIdleConnections)
	info := testInfo()
	info.ContainerConcurrency = cc
	h := newChain(testConfig{Config: Config{
		Throttler:  thr,
		Proxy:      proxy.New(tr, logger, proxy.Options{}),
		IsNotSent:  func(err error) bool { return false },
		QueueDepth: queueDepth,
		Logger:     logger,
	}, Revisions: fakeRevisions{testRev: info}})
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s, thr
}

func get(t *testing.T, url string) (int, string, http.Header) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(withRev(req))
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestActivatorOverload is upstream's: CC=1, 100 concurrent requests over
// 10 pods, all 200, and no pod ever sees two requests at once.
func TestActivatorOverload(t *testing.T) {
	var overlap atomic.Int32
	var dests []string
	for i := 0; i < 10; i++ {
		var inFlight atomic.Int32
		b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if inFlight.Add(1) > 1 {
				overlap.Add(1)
			}
			defer inFlight.Add(-1)
			time.Sleep(10 * time.Millisecond) // the app's work
			io.WriteString(w, "ok")
		}))
		t.Cleanup(b.Close)
		dests = append(dests, addr(b))
	}
	act, thr := realActivator(t, 1, 0)
	thr.UpsertRevision(testRev, throttler.RevisionConfig{ContainerConcurrency: 1})
	thr.UpdateBackends(testRev, throttler.Backends{Dests: dests})

	var wg sync.WaitGroup
	codes := make(chan int, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, _ := get(t, act.URL)
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("got %d, want every request 200", c)
		}
	}
	if n := overlap.Load(); n != 0 {
		t.Fatalf("a CC=1 pod served two requests at once %d times", n)
	}
}

// TestBufferingAtZeroThenRelease: requests for a revision without pods wait,
// and all complete as soon as a pod is routable.
func TestBufferingAtZeroThenRelease(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer b.Close()
	act, thr := realActivator(t, 0, 0)
	thr.UpsertRevision(testRev, throttler.RevisionConfig{})
	const n = 20
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() { c, _, _ := get(t, act.URL); codes <- c }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, _ := thr.Stats(testRev); q == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("requests did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case c := <-codes:
		t.Fatalf("a request ended (%d) with no pod", c)
	default:
	}
	thr.UpdateBackends(testRev, throttler.Backends{Dests: []string{addr(b)}})
	for i := 0; i < n; i++ {
		if c := <-codes; c != 200 {
			t.Fatalf("released request got %d", c)
		}
	}
}

// TestOverloadPastQueueBound: with one busy CC=1 pod and a queue of 10, the
// rest answer 503 with Retry-After at once, and thousands of rejected
// requests leave memory flat.
func TestOverloadPastQueueBound(t *testing.T) {
	release := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	}))
	defer b.Close()
	act, thr := realActivator(t, 1, 10)
	thr.UpsertRevision(testRev, throttler.RevisionConfig{ContainerConcurrency: 1, QueueDepth: 10})
	thr.UpdateBackends(testRev, throttler.Backends{Dests: []string{addr(b)}})

	held := make(chan int, 11)
	for i := 0; i < 11; i++ {
		go func() { c, _, _ := get(t, act.URL); held <- c }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, a := thr.Stats(testRev); q == 10 && a == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("queue did not fill")
		}
		time.Sleep(time.Millisecond)
	}
	code, body, hdr := get(t, act.URL)
	if code != 503 || body != QueueFullBody+"\n" || hdr.Get("Retry-After") != "1" {
		t.Fatalf("past the bound: %d %q Retry-After=%q", code, body, hdr.Get("Retry-After"))
	}

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	var wg sync.WaitGroup
	var rejected atomic.Int32
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if c, _, _ := get(t, act.URL); c == 503 {
					rejected.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	after := heap()
	if rejected.Load() != 2000 {
		t.Fatalf("%d of 2000 overload requests got 503", rejected.Load())
	}
	if q, _ := thr.Stats(testRev); q != 10 {
		t.Fatalf("queue = %d, want it to stay at its bound 10", q)
	}
	growth := int64(after) - int64(before)
	t.Logf("heap in use %d → %d bytes (%+d) over 2000 rejected requests", before, after, growth)
	if growth > 8<<20 {
		t.Fatalf("heap grew %d bytes under overload", growth)
	}
	close(release)
	for i := 0; i < 11; i++ {
		if c := <-held; c != 200 {
			t.Fatalf("queued request got %d", c)
		}
	}
}

// TestDeletedRevisionEndsWaiters: waiting requests of a deleted revision end
// at once, not at the timeout.
func TestDeletedRevisionEndsWaiters(t *testing.T) {
	act, thr := realActivator(t, 0, 0)
	thr.UpsertRevision(testRev, throttler.RevisionConfig{})
	codes := make(chan int, 3)
	for i := 0; i < 3; i++ {
		go func() { c, _, _ := get(t, act.URL); codes <- c }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, _ := thr.Stats(testRev); q == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("requests did not queue")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	thr.DeleteRevision(testRev)
	for i := 0; i < 3; i++ {
		if c := <-codes; c != http.StatusNotFound {
			t.Fatalf("waiter of a deleted revision got %d, want 404", c)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("waiters ended after %v", d)
	}
}
