package statserver

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	upstream "knative.dev/serving/pkg/autoscaler/metrics"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

var epoch = time.Unix(1_800_000_000, 0)

type harness struct {
	s    *Server
	addr string
	out  chan wire.StatMessage
	logs *observer.ObservedLogs
	clk  *clocktesting.FakeClock
}

func start(t *testing.T, opts Options, queue int) *harness {
	t.Helper()
	core, logs := observer.New(zapcore.WarnLevel)
	h := &harness{out: make(chan wire.StatMessage, queue), logs: logs, clk: clocktesting.NewFakeClock(epoch)}
	h.s = New("unused", h.out, opts, h.clk, zap.New(core).Sugar())
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- h.s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

func (h *harness) dial(t *testing.T, path string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+h.addr+path, hdr)
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (h *harness) next(t *testing.T) wire.StatMessage {
	t.Helper()
	select {
	case m := <-h.out:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no stat message delivered")
		return wire.StatMessage{}
	}
}

func upstreamFrame(t *testing.T, msgs ...*upstream.WireStatMessage) []byte {
	t.Helper()
	b, err := (&upstream.WireStatMessages{Messages: msgs}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func send(t *testing.T, c *websocket.Conn, typ int, data []byte) {
	t.Helper()
	if err := c.WriteMessage(typ, data); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func (h *harness) dropped(reason string) float64 {
	return value(h.s.m.dropped.WithLabelValues(reason))
}

func TestMixedFramesConnectionLivesOn(t *testing.T) {
	const limit = 4096
	h := start(t, Options{MaxFrameBytes: limit}, 16)
	c := h.dial(t, "/any/path", nil)

	send(t, c, websocket.BinaryMessage, upstreamFrame(t,
		&upstream.WireStatMessage{Namespace: "ns", Name: "a", Stat: &upstream.Stat{PodName: "activator-1", AverageConcurrentRequests: 2.5}},
		&upstream.WireStatMessage{Namespace: "ns", Name: "b", Stat: &upstream.Stat{PodName: "activator-1", RequestCount: 7, Timestamp: epoch.Unix() - 123}},
	))
	send(t, c, websocket.BinaryMessage, []byte{0x0a, 0xff, 0x01, 0x02}) // truncated
	send(t, c, websocket.TextMessage, []byte("hello"))
	send(t, c, websocket.BinaryMessage, upstreamFrame(t,
		&upstream.WireStatMessage{Namespace: "ns", Name: "nil-stat"},
		&upstream.WireStatMessage{Namespace: "ns", Name: "c", Stat: &upstream.Stat{PodName: "p"}},
	))
	send(t, c, websocket.BinaryMessage, bytes.Repeat([]byte{0}, limit+1))
	send(t, c, websocket.BinaryMessage, upstreamFrame(t,
		&upstream.WireStatMessage{Namespace: "ns", Name: "after-oversize", Stat: &upstream.Stat{Timestamp: epoch.Unix() - 9}},
	))

	want := []wire.StatMessage{
		{Key: types.NamespacedName{Namespace: "ns", Name: "a"}, Stat: wire.Stat{PodName: "activator-1", AverageConcurrentRequests: 2.5, Timestamp: epoch.Unix()}},
		{Key: types.NamespacedName{Namespace: "ns", Name: "b"}, Stat: wire.Stat{PodName: "activator-1", RequestCount: 7, Timestamp: epoch.Unix() - 123}},
		{Key: types.NamespacedName{Namespace: "ns", Name: "c"}, Stat: wire.Stat{PodName: "p", Timestamp: epoch.Unix()}},
		{Key: types.NamespacedName{Namespace: "ns", Name: "after-oversize"}, Stat: wire.Stat{Timestamp: epoch.Unix() - 9}},
	}
	for i, w := range want {
		if got := h.next(t); got != w {
			t.Fatalf("message %d = %+v, want %+v", i, got, w)
		}
	}
	for _, reason := range []string{ReasonMalformed, ReasonText, ReasonNoStat, ReasonOversize} {
		if got := h.dropped(reason); got != 1 {
			t.Errorf("dropped{reason=%s} = %v, want 1", reason, got)
		}
	}
	// The counter is bumped after the hand-off, so it may trail the last message read.
	testutil.Eventually(t, "received = 4", func() bool { return value(h.s.m.received) == 4 })
	if n := h.logs.Len(); n != 4 {
		t.Errorf("%d warning lines, want one per drop (4): %v", n, h.logs.All())
	}

	// Still the same connection: a frame right at the limit is accepted.
	msgs := []wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "big"}, Stat: wire.Stat{Timestamp: epoch.Unix() - 1}}}
	frame := wire.MarshalMessages(msgs)
	pad := limit - len(frame) - 3 // an unknown field 15 of wire type bytes, 2-byte length
	frame = append(frame, 0x7a, byte(pad&0x7f|0x80), byte(pad>>7))
	frame = append(frame, make([]byte, pad)...)
	if len(frame) != limit {
		t.Fatalf("test frame is %d bytes, want %d", len(frame), limit)
	}
	send(t, c, websocket.BinaryMessage, frame)
	if got := h.next(t); got != msgs[0] {
		t.Fatalf("frame at the limit: got %+v, want %+v", got, msgs[0])
	}
}

func TestDefaultLimitIsOneMiB(t *testing.T) {
	h := start(t, Options{}, 4)
	c := h.dial(t, "/", nil)
	send(t, c, websocket.BinaryMessage, make([]byte, DefaultMaxFrameBytes+1))
	send(t, c, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "n", Name: "r"}, Stat: wire.Stat{Timestamp: epoch.Unix() - 5}}}))
	if got := h.next(t); got.Key.Name != "r" {
		t.Fatalf("got %+v", got)
	}
	if got := h.dropped(ReasonOversize); got != 1 {
		t.Fatalf("dropped{oversize} = %v, want 1", got)
	}
}

// A consumer that does not read must stop the reader (TCP backpressure), not let it buffer.
func TestBackpressure(t *testing.T) {
	h := start(t, Options{}, 2)
	c := h.dial(t, "/", nil)
	const frames = 1000
	pod := strings.Repeat("p", 16<<10) // 16 KiB frames, 16 MiB in all: more than loopback socket buffers
	writerDone := make(chan error, 1)
	go func() {
		for i := range frames {
			f := wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "r"}, Stat: wire.Stat{PodName: pod, RequestCount: float64(i + 1)}}})
			if err := c.WriteMessage(websocket.BinaryMessage, f); err != nil {
				writerDone <- err
				return
			}
		}
		writerDone <- nil
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(h.out) < cap(h.out) {
		if time.Now().After(deadline) {
			t.Fatal("queue never filled")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-writerDone:
		t.Fatalf("the producer finished (%v) while nobody consumed: the server buffers without bound", err)
	case <-time.After(300 * time.Millisecond):
	}
	for i := range frames {
		if got := h.next(t); got.Stat.RequestCount != float64(i+1) {
			t.Fatalf("message %d has request count %v: lost or reordered", i, got.Stat.RequestCount)
		}
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
}

func TestShutdownSends1012(t *testing.T) {
	for _, tc := range []struct {
		name    string
		blocked bool // the reader is stuck on a full queue when Shutdown starts
	}{{name: "idle"}, {name: "blocked on a full queue", blocked: true}} {
		t.Run(tc.name, func(t *testing.T) {
			core, _ := observer.New(zapcore.WarnLevel)
			out := make(chan wire.StatMessage) // unbuffered and never read
			s := New("unused", out, Options{CloseGrace: 5 * time.Second}, clocktesting.NewFakeClock(epoch), zap.New(core).Sugar())
			l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(l) }()
			c, _, err := websocket.DefaultDialer.Dial("ws://"+l.Addr().String()+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.blocked {
				send(t, c, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Stat: wire.Stat{Timestamp: epoch.Unix()}}}))
			}
			// The client answers the close frame (gorilla's default close handler) while it reads.
			closeErr := make(chan error, 1)
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						closeErr <- err
						return
					}
				}
			}()
			for value(s.m.connections) != 1 {
				time.Sleep(time.Millisecond)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			began := time.Now()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if d := time.Since(began); d > 4*time.Second {
				t.Errorf("Shutdown took %v: it waited for the grace period instead of the close reply", d)
			}
			if err := <-served; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			var ce *websocket.CloseError
			if err := <-closeErr; !errors.As(err, &ce) || ce.Code != CloseServiceRestart {
				t.Fatalf("client read error %v, want close code %d", err, CloseServiceRestart)
			}
		})
	}
}

func TestShutdownBoundedByContext(t *testing.T) {
	h := start(t, Options{CloseGrace: time.Minute}, 1)
	// A raw TCP client that completes the upgrade but never reads or answers the close frame.
	c := h.dial(t, "/", nil)
	_ = c
	for value(h.s.m.connections) != 1 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := h.s.Shutdown(ctx)
	if d := time.Since(began); d > 3*time.Second {
		t.Fatalf("Shutdown took %v with a 200ms context", d)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestHTTP(t *testing.T) {
	var asked []string
	owns := func(b string) bool { asked = append(asked, b); return b == "autoscaler-bucket-00-of-02" }
	h := start(t, Options{OwnsBucket: owns}, 1)
	tests := []struct {
		name   string
		header http.Header
		host   string
		want   int
	}{
		{name: "kube-probe user agent", header: http.Header{"User-Agent": {"kube-probe/1.36"}}, want: http.StatusOK},
		{name: "K-Kubelet-Probe header", header: http.Header{"K-Kubelet-Probe": {"queue"}}, want: http.StatusOK},
		{name: "probe on a bucket host", header: http.Header{"User-Agent": {"kube-probe/1.36"}}, host: "autoscaler-bucket-01-of-02.knative-serving", want: http.StatusOK},
		{name: "plain GET", want: http.StatusUpgradeRequired},
		{name: "plain GET with a browser agent", header: http.Header{"User-Agent": {"curl/8"}}, want: http.StatusUpgradeRequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+h.addr+"/some/path", nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}

	t.Run("bucket not owned", func(t *testing.T) {
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+h.addr+"/", http.Header{"Host": {"autoscaler-bucket-01-of-02.knative-serving.svc.cluster.local:8080"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("dial: %v, response %v; want 503", err, resp)
		}
	})
	t.Run("bucket owned", func(t *testing.T) {
		c := h.dial(t, "/", http.Header{"Host": {"autoscaler-bucket-00-of-02.knative-serving.svc.cluster.local:8080"}})
		send(t, c, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Stat: wire.Stat{Timestamp: epoch.Unix() - 3}}}))
		if got := h.next(t); got.Stat.Timestamp != epoch.Unix()-3 {
			t.Fatalf("got %+v", got)
		}
	})
	if want := []string{"autoscaler-bucket-01-of-02", "autoscaler-bucket-00-of-02"}; strings.Join(asked, ",") != strings.Join(want, ",") {
		t.Fatalf("OwnsBucket asked %v, want %v", asked, want)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := start(t, Options{Registerer: reg}, 1)
	c := h.dial(t, "/", nil)
	send(t, c, websocket.TextMessage, []byte("x"))
	send(t, c, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Stat: wire.Stat{Timestamp: epoch.Unix()}}}))
	h.next(t)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "thaw_statserver_") {
			n += len(f.GetMetric())
		}
	}
	if want := len(dropReasons()) + 2; n != want { // every reason + received + connections
		t.Fatalf("%d series, want %d", n, want)
	}
	if got := h.dropped(ReasonText); got != 1 {
		t.Fatalf("dropped{text} = %v", got)
	}
}

func TestDecodeFrame(t *testing.T) {
	good := wire.MarshalMessages([]wire.StatMessage{{Stat: wire.Stat{PodName: "p"}}, {Stat: wire.Stat{Timestamp: 2}}})
	tests := []struct {
		name       string
		typ        int
		data       []byte
		wantDrop   string
		wantMsgs   int
		wantNoStat int
	}{
		{name: "binary", typ: websocket.BinaryMessage, data: good, wantMsgs: 2},
		{name: "empty binary", typ: websocket.BinaryMessage},
		{name: "text", typ: websocket.TextMessage, data: good, wantDrop: ReasonText},
		{name: "garbage", typ: websocket.BinaryMessage, data: []byte{0xff}, wantDrop: ReasonMalformed},
		{name: "nil stat", typ: websocket.BinaryMessage, data: []byte{0x0a, 0x02, 0x12, 0x00}, wantNoStat: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, noStat, drop, err := decodeFrame(tc.typ, tc.data, 77)
			if drop != tc.wantDrop || (err != nil) != (tc.wantDrop != "") || len(msgs) != tc.wantMsgs || noStat != tc.wantNoStat {
				t.Fatalf("got %d msgs, %d noStat, drop %q, err %v", len(msgs), noStat, drop, err)
			}
			for _, m := range msgs {
				if m.Stat.Timestamp == 0 {
					t.Fatalf("unstamped %+v", m)
				}
			}
			if tc.wantMsgs == 2 && (msgs[0].Stat.Timestamp != 77 || msgs[1].Stat.Timestamp != 2) {
				t.Fatalf("stamping: %+v", msgs)
			}
		})
	}
}

func FuzzDecodeFrame(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		f.Add(uint8(websocket.BinaryMessage), wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "r"}, Stat: wire.Stat{RequestCount: r.Float64(), Timestamp: r.Int64N(3)}}}))
	}
	f.Add(uint8(websocket.TextMessage), []byte("x"))
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		msgs, noStat, drop, err := decodeFrame(int(typ), data, 42)
		switch {
		case int(typ) != websocket.BinaryMessage:
			if drop != ReasonText || err == nil || msgs != nil {
				t.Fatalf("non-binary frame: drop %q err %v msgs %v", drop, err, msgs)
			}
			return
		case drop != "":
			if drop != ReasonMalformed || err == nil || msgs != nil || noStat != 0 {
				t.Fatalf("drop %q err %v msgs %v noStat %d", drop, err, msgs, noStat)
			}
			return
		}
		raw, rawNoStat, rawErr := wire.UnmarshalMessages(data)
		if rawErr != nil || len(raw) != len(msgs) || rawNoStat != noStat {
			t.Fatalf("decodeFrame disagrees with wire: %v %d vs %d %d", rawErr, len(raw), len(msgs), noStat)
		}
		for i, m := range msgs {
			want := raw[i]
			if want.Stat.Timestamp == 0 {
				want.Stat.Timestamp = 42
			}
			if m.Key != want.Key || m.Stat.Timestamp != want.Stat.Timestamp || m.Stat.PodName != want.Stat.PodName {
				t.Fatalf("message %d = %+v, want %+v", i, m, want)
			}
		}
	})
}
