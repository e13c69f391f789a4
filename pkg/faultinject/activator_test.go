package faultinject

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/wire"
)

type recSink struct {
	mu      sync.Mutex
	pokes   []wire.StatMessage
	batches [][]wire.StatMessage
}

func (s *recSink) Poke(m wire.StatMessage) { s.mu.Lock(); s.pokes = append(s.pokes, m); s.mu.Unlock() }
func (s *recSink) Report(b []wire.StatMessage) {
	s.mu.Lock()
	s.batches = append(s.batches, b)
	s.mu.Unlock()
}
func (s *recSink) counts() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pokes), len(s.batches)
}

func TestSinkFaults(t *testing.T) {
	msg := wire.StatMessage{Key: types.NamespacedName{Namespace: "ns", Name: "rev"}}
	for _, tc := range []struct {
		name       string
		data       map[string]string
		fault      Fault
		wantNow    [2]int // pokes, batches right after one of each
		wantLater  [2]int // after the delay
		wantFaults float64
	}{
		{name: "none", data: map[string]string{}, wantNow: [2]int{1, 1}, wantLater: [2]int{1, 1}},
		{name: "poke drop", data: map[string]string{string(PokeDrop): ""}, fault: PokeDrop, wantNow: [2]int{0, 1}, wantLater: [2]int{0, 1}, wantFaults: 1},
		{name: "poke delay", data: map[string]string{string(PokeDelay): "delay=2s"}, fault: PokeDelay, wantNow: [2]int{0, 1}, wantLater: [2]int{1, 1}, wantFaults: 1},
		{name: "stats drop", data: map[string]string{string(StatsDrop): ""}, fault: StatsDrop, wantNow: [2]int{1, 0}, wantLater: [2]int{1, 0}, wantFaults: 1},
		{name: "stats delay", data: map[string]string{string(StatsDelay): "delay=2s"}, fault: StatsDelay, wantNow: [2]int{1, 0}, wantLater: [2]int{1, 1}, wantFaults: 1},
		{name: "drop wins over delay", data: map[string]string{string(PokeDrop): "", string(PokeDelay): "delay=2s"}, fault: PokeDrop, wantNow: [2]int{0, 1}, wantLater: [2]int{0, 1}, wantFaults: 1},
		{name: "autoscaler keys do nothing here", data: map[string]string{string(StatDrop): ""}, wantNow: [2]int{1, 1}, wantLater: [2]int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Activator, nil)
			f.apply(t, tc.data)
			rec := &recSink{}
			s := f.inj.WrapSink(rec, f.clk)
			s.Poke(msg)
			s.Report([]wire.StatMessage{msg})
			if p, b := rec.counts(); [2]int{p, b} != tc.wantNow {
				t.Errorf("at once: %d pokes, %d batches; want %v", p, b, tc.wantNow)
			}
			f.clk.Step(time.Second)
			if p, b := rec.counts(); [2]int{p, b} != tc.wantNow {
				t.Errorf("before the delay: %d pokes, %d batches; want %v", p, b, tc.wantNow)
			}
			f.clk.Step(time.Second)
			if p, b := rec.counts(); [2]int{p, b} != tc.wantLater {
				t.Errorf("after the delay: %d pokes, %d batches; want %v", p, b, tc.wantLater)
			}
			if tc.fault != "" {
				if got := f.injected(tc.fault); got != tc.wantFaults {
					t.Errorf("counted %v, want %v", got, tc.wantFaults)
				}
			}
		})
	}
}

func TestSinkDelayIsBounded(t *testing.T) {
	f := newFixture(t, Activator, nil)
	f.apply(t, map[string]string{string(PokeDelay): "delay=1m"})
	rec := &recSink{}
	s := f.inj.WrapSink(rec, f.clk)
	for range MaxDelayed + 10 {
		s.Poke(wire.StatMessage{})
	}
	if p, _ := rec.counts(); p != 10 {
		t.Errorf("%d pokes sent at once past the bound, want 10", p)
	}
	if got := f.injected(PokeDelay); got != MaxDelayed {
		t.Errorf("counted %v delays, want %d", got, MaxDelayed)
	}
	f.clk.Step(time.Minute)
	if p, _ := rec.counts(); p != MaxDelayed+10 {
		t.Errorf("%d pokes after the delay, want all %d", p, MaxDelayed+10)
	}
	// The room is back.
	s.Poke(wire.StatMessage{})
	if got := f.injected(PokeDelay); got != MaxDelayed+1 {
		t.Errorf("counted %v delays, want %d", got, MaxDelayed+1)
	}
}

type okTransport struct{ calls int }

func (o *okTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	o.calls++
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

func TestPodTransportErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		value     string
		draw      float64
		wantCode  int
		wantReset bool
		wantCalls int
	}{
		{name: "500", value: "status=500", wantCode: 500},
		{name: "503 at p=0.5, drawn", value: "status=503 p=0.5", draw: 0.2, wantCode: 503},
		{name: "503 at p=0.5, not drawn", value: "status=503 p=0.5", draw: 0.7, wantCode: 200, wantCalls: 1},
		{name: "reset", value: "status=reset", wantReset: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Activator, draws(tc.draw))
			f.apply(t, map[string]string{string(PodError): tc.value})
			next := &okTransport{}
			rt := f.inj.WrapPodTransport(next)
			req := httptest.NewRequest("GET", "http://10.0.0.1:8012/", nil)
			resp, err := rt.RoundTrip(req)
			if next.calls != tc.wantCalls {
				t.Errorf("pod reached %d times, want %d", next.calls, tc.wantCalls)
			}
			if tc.wantReset {
				if !errors.Is(err, syscall.ECONNRESET) || proxy.IsDialError(err) {
					t.Fatalf("err = %v, want a reset that is not a dial error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if injected := resp.Header.Get(Header) != ""; injected != (tc.wantCalls == 0) {
				t.Errorf("%s header %q", Header, resp.Header.Get(Header))
			}
		})
	}
}

func TestPodLatencyWaitsOnTheClockAndHonoursCancel(t *testing.T) {
	f := newFixture(t, Activator, nil)
	f.apply(t, map[string]string{string(PodLatency): "delay=300ms"})
	next := &okTransport{}
	rt := f.inj.WrapPodTransport(next)

	done := make(chan error, 1)
	go func() {
		resp, err := rt.RoundTrip(httptest.NewRequest("GET", "http://10.0.0.1:8012/", nil))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	testutil.StepWhenWaiting(t, f.clk, 299*time.Millisecond)
	select {
	case <-done:
		t.Fatal("sent before the delay")
	default:
	}
	f.clk.Step(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := rt.RoundTrip(httptest.NewRequest("GET", "http://10.0.0.1:8012/", nil).WithContext(ctx))
		done <- err
	}()
	testutil.Eventually(t, "the request waits on the clock", f.clk.HasWaiters)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v, want context.Canceled", err)
	}
	if next.calls != 1 {
		t.Errorf("pod reached %d times, want 1", next.calls)
	}
}

func TestProbeStall(t *testing.T) {
	f := newFixture(t, Activator, nil)
	f.apply(t, map[string]string{string(ProbeStall): "delay=5s"})
	next := &okTransport{}
	rt := f.inj.WrapProbeTransport(next)
	// A probe with a timeout shorter than the stall fails; its pod is never reached.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := rt.RoundTrip(httptest.NewRequest("GET", "http://10.0.0.1:8012/", nil).WithContext(ctx))
		done <- err
	}()
	testutil.Eventually(t, "the probe waits on the clock", f.clk.HasWaiters)
	cancel() // the probe's timeout
	if err := <-done; !errors.Is(err, context.Canceled) || next.calls != 0 {
		t.Fatalf("stalled probe: err %v, %d calls", err, next.calls)
	}
	// One given the time goes through after the stall.
	go func() {
		resp, err := rt.RoundTrip(httptest.NewRequest("GET", "http://10.0.0.1:8012/", nil))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	testutil.StepWhenWaiting(t, f.clk, 5*time.Second)
	if err := <-done; err != nil || next.calls != 1 {
		t.Fatalf("probe after the stall: err %v, %d calls", err, next.calls)
	}
	if got := f.injected(ProbeStall); got != 2 {
		t.Errorf("counted %v stalls, want 2", got)
	}
}

// TestThroughTheProxy runs the pod hop's faults through Thaw's real proxy to a loopback pod: what the
// activator's client sees.
func TestThroughTheProxy(t *testing.T) {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "pod") }))
	defer pod.Close()
	dest := pod.Listener.Addr().String()
	for _, tc := range []struct {
		value    string
		wantCode int
		wantBody string
	}{
		{value: "status=500", wantCode: 500, wantBody: "fault injected: activator.pod-error\n"},
		{value: "status=reset", wantCode: 502},
		{value: "status=500 p=0", wantCode: 200, wantBody: "pod"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			f := newFixture(t, Activator, nil)
			f.apply(t, map[string]string{string(PodError): tc.value})
			px := proxy.New(proxy.NewTransport(10, 10), zap.NewNop().Sugar(), proxy.Options{WrapTransport: f.inj.WrapPodTransport})
			w := httptest.NewRecorder()
			if err := px.Serve(w, httptest.NewRequest("GET", "http://svc.example.com/", nil), proxy.Target{Dest: dest}); err != nil {
				t.Fatal(err)
			}
			if w.Code != tc.wantCode {
				t.Errorf("status %d, want %d", w.Code, tc.wantCode)
			}
			if tc.wantBody != "" && w.Body.String() != tc.wantBody {
				t.Errorf("body %q, want %q", w.Body.String(), tc.wantBody)
			}
		})
	}
}
