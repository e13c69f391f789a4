package activator

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/test/podharness"
)

// TestPodFairQueue (pod level, real queue-proxy pods): two revisions overloaded with four times the
// activator-wide queue bound cannot fill it between them; a cold request to a third revision still waits
// and is served as soon as its pod is up, while the overloaded ones are still queuing.
func TestPodFairQueue(t *testing.T) {
	net := podharness.NewNetwork(t)
	hot := []types.NamespacedName{{Namespace: "ns-a", Name: "hot-1"}, {Namespace: "ns-b", Name: "hot-2"}}
	cold := types.NamespacedName{Namespace: "ns-c", Name: "cold"}
	hotPods := []*podharness.Pod{net.StartPod(t, podharness.PodOptions{ContainerConcurrency: 1}),
		net.StartPod(t, podharness.PodOptions{ContainerConcurrency: 1})}
	coldPod := net.StartPod(t, podharness.PodOptions{ContainerConcurrency: 1, DeferApp: true})

	const total = 30
	logger := zaptest.NewLogger(t).Sugar()
	thr := throttler.New("10.0.0.1", throttler.Options{QueueDepth: 1000, TotalQueueDepth: total}, clock.RealClock{}, logger.Named("throttler"))
	tr := proxy.NewTransport(1000, 100)
	t.Cleanup(tr.CloseIdleConnections)
	revs := fakeRevisions{}
	for _, r := range append(hot, cold) {
		revs[r] = &revisions.Info{ID: r, ContainerConcurrency: 1, Timeout: time.Minute, ResponseStartTimeout: time.Minute}
		thr.UpsertRevision(r, throttler.RevisionConfig{ContainerConcurrency: 1, QueueDepth: 1000})
	}
	for i, r := range hot {
		thr.UpdateBackends(r, throttler.Backends{Dests: []string{hotPods[i].Dest()}})
	}
	h := newChain(testConfig{Config: Config{Throttler: thr, Proxy: proxy.New(tr, logger.Named("proxy"), proxy.Options{}),
		IsNotSent: func(err error) bool { return errors.Is(err, proxy.ErrNotSent) }, QueueDepth: 1000, Logger: logger}, Revisions: revs})
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	get := func(rev types.NamespacedName, query string) int {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/"+query, nil)
		req.Header.Set(proxy.RevisionHeader, rev.Name)
		req.Header.Set(proxy.NamespaceHeader, rev.Namespace)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}

	const perHot = 2 * total
	hotCodes := make(chan int, len(hot)*perHot)
	for range perHot {
		for _, r := range hot {
			go func() { hotCodes <- get(r, "?sleep=100") }()
		}
	}
	testutil.Eventually(t, "hot revisions saturated", func() bool {
		q1, _ := thr.Stats(hot[0])
		q2, _ := thr.Stats(hot[1])
		return q1 > 0 && q2 > 0 && len(hotCodes) > 0
	})
	coldCode := make(chan int, 1)
	go func() { coldCode <- get(cold, "") }()
	testutil.Eventually(t, "cold request queued", func() bool { q, _ := thr.Stats(cold); return q == 1 })
	coldPod.StartApp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := coldPod.WaitReady(ctx); err != nil { // what the endpoints manager's probe waits for
		t.Fatal(err)
	}
	thr.UpdateBackends(cold, throttler.Backends{Dests: []string{coldPod.Dest()}})
	if c := <-coldCode; c != http.StatusOK {
		t.Fatalf("cold request: %d, want 200\n%s", c, coldPod.Logs())
	}
	q1, _ := thr.Stats(hot[0])
	q2, _ := thr.Stats(hot[1])
	t.Logf("cold request served while the hot revisions still queue %d and %d", q1, q2)
	shed := 0
	for range len(hot) * perHot {
		switch c := <-hotCodes; c {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			shed++
		default:
			t.Fatalf("hot request: %d", c)
		}
	}
	if shed == 0 {
		t.Fatal("the hot revisions were never shed")
	}
}
