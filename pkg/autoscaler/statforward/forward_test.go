package statforward

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	upstreammetrics "knative.dev/serving/pkg/autoscaler/metrics"
	upstreamstatserver "knative.dev/serving/pkg/autoscaler/statserver"

	"github.com/thaw-dev/thaw/pkg/autoscaler/statserver"
	"github.com/thaw-dev/thaw/pkg/wire"
)

var (
	mine   = types.NamespacedName{Namespace: "ns", Name: "owned-by-upstream"}
	theirs = types.NamespacedName{Namespace: "ns", Name: "owned-elsewhere"}
)

// stamp is a timestamp the stat server accepts: within a minute of its (real) clock.
var stamp = time.Now().Unix()

func stat(key types.NamespacedName, c float64) wire.StatMessage {
	return wire.StatMessage{Key: key, Stat: wire.Stat{PodName: "activator-1", AverageConcurrentRequests: c, Timestamp: stamp}}
}

// serve serves s on loopback until the test ends and returns its address.
func serve(tb testing.TB, s *statserver.Server) string {
	ts := httptest.NewServer(s.Handler())
	tb.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

// thawPeer is a Thaw replica's stat server on loopback.
func thawPeer(t *testing.T) (addr string, activator, peer chan wire.StatMessage) {
	activator, peer = make(chan wire.StatMessage, 100), make(chan wire.StatMessage, 100)
	s := statserver.New("unused", activator, statserver.Options{PeerSubprotocol: Subprotocol, PeerOut: peer},
		clock.RealClock{}, zaptest.NewLogger(t).Sugar())
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://"), activator, peer
}

// upstreamPeer is upstream's v0.50 stat server, as an upstream replica in a mixed fleet runs it.
func upstreamPeer(t *testing.T) (addr string, out chan upstreammetrics.StatMessage) {
	out = make(chan upstreammetrics.StatMessage, 100)
	s := upstreamstatserver.New("unused", out, zaptest.NewLogger(t).Sugar(), func(string) bool { return true })
	ts := httptest.NewServer(http.HandlerFunc(s.Handler))
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://"), out
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing arrived: %s", what)
	}
	var zero T
	return zero
}

func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: got %+v", what, v)
	default:
	}
}

// A Thaw peer gets every stat and mirror, on its peer channel; upstream's replica gets, as plain stats,
// only those of the buckets it holds, and never a mirror.
func TestForwardToThawAndUpstreamPeers(t *testing.T) {
	thawAddr, thawActivator, thawPeerCh := thawPeer(t)
	upAddr, upOut := upstreamPeer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := New(ctx, Options{SelfIP: "10.0.0.1", Logger: zaptest.NewLogger(t).Sugar(),
		OwnerIP: func(k types.NamespacedName) (string, bool) {
			if k == mine {
				return upAddr, true
			}
			return thawAddr, true
		}})
	defer f.Close()
	f.SetPeers([]string{thawAddr, upAddr, "10.0.0.1"})
	if n := len(f.Peers()); n != 2 {
		t.Fatalf("peers %v: self must not be one", f.Peers())
	}

	f.Forward(stat(mine, 3))
	if got := recv(t, thawPeerCh, "thaw peer, forwarded stat"); got.Key != mine || got.Stat.AverageConcurrentRequests != 3 {
		t.Fatalf("thaw peer got %+v", got)
	}
	got := recv(t, upOut, "upstream owner, forwarded stat")
	if got.Key != mine || got.Stat.AverageConcurrentRequests != 3 || got.Stat.PodName != "activator-1" || got.Stat.Timestamp != stamp {
		t.Fatalf("upstream owner got %+v", got)
	}

	f.Forward(stat(theirs, 4))
	f.Mirror(stat(mine, 5))
	if got := recv(t, thawPeerCh, "thaw peer, second"); got.Key != theirs {
		t.Fatalf("thaw peer got %+v", got)
	}
	if got := recv(t, thawPeerCh, "thaw peer, mirror"); got.Key != mine || got.Stat.AverageConcurrentRequests != 5 {
		t.Fatalf("thaw peer got %+v", got)
	}
	// A marker the upstream owner does get, to know the others were skipped rather than late.
	f.Forward(stat(mine, 6))
	if got := recv(t, upOut, "upstream owner, marker"); got.Stat.AverageConcurrentRequests != 6 {
		t.Fatalf("upstream replica got %+v: a stat of another bucket or a mirror", got)
	}
	none(t, thawActivator, "nothing reaches a Thaw peer's activator channel")
	if kinds := f.Peers(); !kinds[thawAddr] || kinds[upAddr] {
		t.Fatalf("peer kinds %v", kinds)
	}
}

// A peer that never answers costs at most its queue: Forward never blocks, the oldest stats make room,
// and the drops are counted; once it is removed from the set its queue is dropped as peer_gone.
func TestUnreachablePeerIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := New(ctx, Options{SelfIP: "10.0.0.1", Queue: 16, Logger: zaptest.NewLogger(t).Sugar()})
	defer f.Close()
	f.SetPeers([]string{"127.0.0.1:1"}) // nothing listens on port 1
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10_000 {
			f.Forward(stat(theirs, float64(i)))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Forward blocked on an unreachable peer")
	}
	if full := testutil.ToFloat64(f.m.dropped.WithLabelValues(ReasonQueueFull)); full < 10_000-16 {
		t.Fatalf("queue_full drops = %v, want >= %d", full, 10_000-16)
	}
	f.SetPeers(nil)
	f.Close()
	if gone := testutil.ToFloat64(f.m.dropped.WithLabelValues(ReasonPeerGone)); gone < 1 || gone > 16 {
		t.Fatalf("peer_gone drops = %v, want 1..16", gone)
	}
}

// A peer that restarts is redialled and gets what was queued meanwhile.
func TestRedialAfterPeerRestart(t *testing.T) {
	activator, peer := make(chan wire.StatMessage, 100), make(chan wire.StatMessage, 100)
	s := statserver.New("unused", activator, statserver.Options{PeerSubprotocol: Subprotocol, PeerOut: peer},
		clock.RealClock{}, zaptest.NewLogger(t).Sugar())
	ts := httptest.NewUnstartedServer(s.Handler())
	ts.Start()
	addr := strings.TrimPrefix(ts.URL, "http://")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := New(ctx, Options{SelfIP: "10.0.0.1", Logger: zaptest.NewLogger(t).Sugar()})
	defer f.Close()
	f.SetPeers([]string{addr})
	f.Forward(stat(theirs, 1))
	recv(t, peer, "before the restart")
	ts.CloseClientConnections()
	ts.Close()

	// The same address again, as a restarted pod keeps its IP in this test.
	ts2 := httptest.NewUnstartedServer(s.Handler())
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("port %s not free again: %v", addr, err)
	}
	ts2.Listener = l
	ts2.Start()
	defer ts2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f.Forward(stat(theirs, 2))
		select {
		case got := <-peer:
			if got.Stat.AverageConcurrentRequests == 2 {
				return
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatal("no stat reached the restarted peer")
}
