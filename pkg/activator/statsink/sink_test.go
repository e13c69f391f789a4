package statsink

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/autoscaler/statserver"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// statServer runs a real autoscaler stat server on addr ("127.0.0.1:0" for any).
type statServer struct {
	srv  *statserver.Server
	out  chan wire.StatMessage
	addr string
	done chan struct{}
}

func startStatServer(t *testing.T, addr string) *statServer {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan wire.StatMessage, 100)
	s := &statServer{srv: statserver.New(l.Addr().String(), out, statserver.Options{}, clock.RealClock{}, zap.NewNop().Sugar()),
		out: out, addr: l.Addr().String(), done: make(chan struct{})}
	go func() { s.srv.Serve(l); close(s.done) }()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *statServer) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	<-s.done
}

func (s *statServer) next(t *testing.T) wire.StatMessage {
	t.Helper()
	select {
	case m := <-s.out:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no stat received")
		return wire.StatMessage{}
	}
}

// eventually polls cond (a network condition) until testutil.Timeout,
// stepping the fake clock whenever the sink waits on it so that backoff
// waits elapse.
func eventually(t *testing.T, clk *clocktesting.FakeClock, cond func() bool) {
	t.Helper()
	if clk == nil {
		testutil.Eventually(t, "condition", cond)
		return
	}
	testutil.StepUntil(t, clk, 100*time.Millisecond, cond)
}

func msg(name string, conc float64) wire.StatMessage {
	return wire.StatMessage{Key: types.NamespacedName{Namespace: "ns", Name: name},
		Stat: wire.Stat{PodName: "act", AverageConcurrentRequests: conc, RequestCount: conc}}
}

func runSink(t *testing.T, s *Sink) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestSendsPokesAndBatches(t *testing.T) {
	srv := startStatServer(t, "127.0.0.1:0")
	clk := clocktesting.NewFakeClock(time.Now())
	s := New("ws://"+srv.addr, Options{}, clk, zap.NewNop().Sugar())
	runSink(t, s)
	eventually(t, nil, s.Connected)

	s.Poke(msg("a", 1))
	if got := srv.next(t); got.Key.Name != "a" || got.Stat.AverageConcurrentRequests != 1 || got.Stat.PodName != "act" {
		t.Fatalf("poke = %+v", got)
	}
	s.Report([]wire.StatMessage{msg("b", 2), msg("c", 3)})
	got := map[string]float64{}
	for i := 0; i < 2; i++ {
		m := srv.next(t)
		got[m.Key.Name] = m.Stat.AverageConcurrentRequests
	}
	if got["b"] != 2 || got["c"] != 3 {
		t.Fatalf("batch = %v", got)
	}
}

// TestOnPokeSentWithTheWrite: a poke is reported by the time the server has its frame (the cold start
// it belongs to may end right after), and a periodic batch is not reported.
func TestOnPokeSentWithTheWrite(t *testing.T) {
	srv := startStatServer(t, "127.0.0.1:0")
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	sent := make(chan types.NamespacedName, 4)
	var at time.Time
	s := New("ws://"+srv.addr, Options{OnPokeSent: func(rev types.NamespacedName, t time.Time) {
		at = t
		sent <- rev
	}}, clk, zap.NewNop().Sugar())
	runSink(t, s)
	eventually(t, nil, s.Connected)

	s.Report([]wire.StatMessage{msg("batch", 1)})
	srv.next(t)
	s.Poke(msg("a", 1))
	srv.next(t)
	select {
	case rev := <-sent:
		if rev.Name != "a" || !at.Equal(clk.Now()) {
			t.Fatalf("OnPokeSent(%v, %v), want a at %v", rev, at, clk.Now())
		}
	default:
		t.Fatal("the server has the poke's frame, and OnPokeSent was not called yet")
	}
	if len(sent) != 0 {
		t.Fatalf("OnPokeSent called for a periodic batch: %v", <-sent)
	}
}

func TestDisconnectedKeepsPokesDropsBatches(t *testing.T) {
	// Reserve a port, start without a server.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()

	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	clk := clocktesting.NewFakeClock(time.Now())
	s := New("ws://"+addr, Options{MaxPokes: 2, Registerer: reg}, clk, zap.New(core).Sugar())
	runSink(t, s)

	// Several failed dials while no server listens.
	for i := 0; i < 5; i++ {
		testutil.StepWhenWaiting(t, clk, 5*time.Second)
	}
	if s.Connected() {
		t.Fatal("connected to nothing")
	}
	s.Report([]wire.StatMessage{msg("batch", 5)})
	s.Poke(msg("a", 1))
	s.Poke(msg("a", 1)) // deduplicated
	s.Poke(msg("b", 1))
	s.Poke(msg("c", 1)) // over the bound: dropped

	srv := startStatServer(t, addr)
	eventually(t, clk, s.Connected)
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		got[srv.next(t).Key.Name] = true
	}
	if !got["a"] || !got["b"] {
		t.Fatalf("pokes after reconnect = %v, want a and b", got)
	}
	// A fence instead of a short wait: one more poke goes out on the same connection after anything the
	// reconnect flushed, so the next message must be it.
	s.Poke(msg("fence", 1))
	if m := srv.next(t); m.Key.Name != "fence" {
		t.Fatalf("unexpected message %+v (dropped batch or duplicate poke)", m)
	}
	if n := logs.FilterMessage("Autoscaler not reachable; retrying in the background").Len(); n != 1 {
		t.Fatalf("%d outage log lines, want 1", n)
	}
	if v := metricValue(t, reg, "kn_activator_stats_conn_reachable"); v != 1 {
		t.Fatalf("reachable = %v", v)
	}
	if v := metricValue(t, reg, "kn_activator_stats_conn_errors_total"); v < 5 {
		t.Fatalf("errors = %v, want every failed dial", v)
	}

	// The server goes away (close 1012) and comes back: one lost line, one
	// re-established line, and the gauge follows.
	srv.stop()
	eventually(t, nil, func() bool { return !s.Connected() })
	if v := metricValue(t, reg, "kn_activator_stats_conn_reachable"); v != 0 {
		t.Fatalf("reachable = %v after loss", v)
	}
	srv2 := startStatServer(t, addr)
	eventually(t, clk, s.Connected)
	s.Poke(msg("after", 1))
	if m := srv2.next(t); m.Key.Name != "after" {
		t.Fatalf("after reconnect got %+v", m)
	}
	if logs.FilterMessage("Autoscaler connection lost; reconnecting").Len() != 1 ||
		logs.FilterMessage("Autoscaler connection re-established").Len() != 1 {
		t.Fatalf("logs: %v", logs.All())
	}
}

func TestRunStops(t *testing.T) {
	srv := startStatServer(t, "127.0.0.1:0")
	s := New("ws://"+srv.addr, Options{}, clock.RealClock{}, zap.NewNop().Sugar())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	eventually(t, nil, s.Connected)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestURL(t *testing.T) {
	if got := URL("knative-serving", "cluster.local"); got != "ws://autoscaler.knative-serving.svc.cluster.local:8080" {
		t.Fatal(got)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.Metric[0]
			if m.Gauge != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}
