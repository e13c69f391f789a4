package lifecycle

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// windowOf is rev's concurrency per second in the windows the replica serves to its peers.
func windowOf(t *testing.T, metricsAddr string) map[int64]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := fetchWindows(ctx, &http.Client{}, "http://"+metricsAddr+windowsPath)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]float64{}
	for _, rs := range snap {
		if rs.Namespace == rev.Namespace && rs.Name == rev.Name {
			for _, s := range rs.Seconds {
				out[s.Sec] = s.Concurrency
			}
		}
	}
	return out
}

// A holder killed and restarted in place while an activator keeps reporting to the other replica:
// that replica queues the outage's stats for it and flushes them once it is back, after it took that
// replica's windows, which hold them already. No second of the restarted replica's window may count
// more than the replica that saw every stat once (before the fix, the outage's seconds counted twice,
// the over-provisioning of the autoscaler-kill chaos scenario).
func TestRestartInPlaceCountsTheOutageOnce(t *testing.T) {
	p := newPair(t, "127.0.0.8", "127.0.0.9", "15s")
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+p.b.addrs[0]+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop, sends := stream(t, conn)
	defer stop()
	eventually(t, "a's window holds stats", func() bool { return len(windowOf(t, p.a.addrs[1])) >= 2 })
	p.dead.Store(true) // a dies: no release
	p.a.stop(t)
	n := sends.Load()
	eventually(t, "three stats during the outage", func() bool { return sends.Load() >= n+3 })
	p.dead.Store(false)
	a := p.h.startReplica(t, "autoscaler-a", p.ipA, p.port, p.mport)
	eventually(t, "the restarted a has a window", func() bool { return len(windowOf(t, a.addrs[1])) > 0 })
	// b redials a every 500 ms and then flushes its queue: two more seconds of stream cover it.
	n = sends.Load()
	eventually(t, "two stats after the restart", func() bool { return sends.Load() >= n+2 })
	got, want := windowOf(t, a.addrs[1]), windowOf(t, p.b.addrs[1])
	if len(got) == 0 {
		t.Fatal("the restarted replica has no window")
	}
	for sec, v := range got {
		if v > want[sec] {
			t.Errorf("second %d: the restarted replica counts %v, the replica that saw every stat once %v", sec, v, want[sec])
		}
	}
}
