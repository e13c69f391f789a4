package activator

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/statsink"
	"github.com/thaw-dev/thaw/pkg/autoscaler/statserver"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// TestPokeReachesRealStatServer sends the first request of an idle revision
// through the handler while the reporter's clock stands still (no 1 s tick
// can fire) and expects its poke at a real autoscaler stat server over
// loopback. The wall-clock latency is logged, not asserted.
func TestPokeReachesRealStatServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan wire.StatMessage, 10)
	srv := statserver.New(lis.Addr().String(), out, statserver.Options{}, clock.RealClock{}, zap.NewNop().Sugar())
	go srv.Serve(lis)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	sink := statsink.New("ws://"+lis.Addr().String(), statsink.Options{}, clock.RealClock{}, zap.NewNop().Sugar())
	ctx, cancel := context.WithCancel(context.Background())
	sinkDone := make(chan struct{})
	go func() { sink.Run(ctx); close(sinkDone) }()
	t.Cleanup(func() { cancel(); <-sinkDone })
	deadline := time.Now().Add(10 * time.Second)
	for !sink.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("sink did not connect")
		}
		time.Sleep(time.Millisecond)
	}

	frozen := clocktesting.NewFakeClock(time.Now())
	rep := concurrency.New("activator-0", sink, frozen, nil)
	repDone := make(chan struct{})
	go func() { rep.Run(ctx); close(repDone) }()
	t.Cleanup(func() { cancel(); <-repDone })

	// The request waits in the throttler (scale from zero).
	th := &fakeThrottler{block: true, started: make(chan struct{})}
	h := newTestHandler(t, th, okProxy, func(c *testConfig) { c.Reporter = rep })
	reqCtx, reqCancel := context.WithCancel(context.Background())
	defer reqCancel()
	start := time.Now()
	res := serveAsync(h, revRequest(http.MethodGet).WithContext(reqCtx))

	select {
	case m := <-out:
		latency := time.Since(start)
		if m.Key != testRev || m.Stat.AverageConcurrentRequests != 1 || m.Stat.RequestCount != 1 || m.Stat.PodName != "activator-0" {
			t.Fatalf("poke = %+v", m)
		}
		t.Logf("poke reached the stat server %v after the request arrived", latency)
	case <-time.After(10 * time.Second):
		t.Fatal("no poke at the stat server")
	}
	reqCancel()
	<-res
}
