package endpoints

import (
	"net/http"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/test/podharness"
)

// TestRealPodColdStart probes real queue-proxies: a pod is not routed while its app is down and is routed
// promptly once the app listens, also over a 150ms RTT link.
func TestRealPodColdStart(t *testing.T) {
	tests := []struct {
		name  string
		delay time.Duration
	}{
		{name: "local", delay: 0},
		{name: "150ms RTT", delay: 75 * time.Millisecond},
	}
	n := podharness.NewNetwork(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{Clock: clock.RealClock{}, Transport: &http.Transport{}}, revInfo())
			p := n.StartPod(t, podharness.PodOptions{DeferApp: true, Delay: tc.delay})
			e.apply(privateEndpoints(testRev, "http", epAddr{p.Dest(), false}))
			// Give the watcher time for a few probe rounds; the app is not there, so no route.
			time.Sleep(time.Second)
			if b, _ := e.sink.last(testRev); len(b.Dests) != 0 {
				t.Fatalf("routed to a pod whose app is down: %+v", b)
			}
			start := time.Now()
			p.StartApp(t)
			e.sink.waitBackends(t, testRev, "pod once its app is up", hasDests(p.Dest()))
			t.Logf("routed %v after the app started (RTT %v)", time.Since(start).Round(time.Millisecond), 2*tc.delay)
		})
	}
}
