package statserver

import (
	"bytes"
	"encoding/binary"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// TestStatValidation: stats with timestamps outside the window around the server's clock, and negative,
// non-finite or absurd values never leave the server; each is counted by reason, the rest of the frame
// is delivered.
func TestStatValidation(t *testing.T) {
	now := epoch.Unix()
	tests := []struct {
		name   string
		stat   wire.Stat
		reason string
	}{
		{name: "stamped by the server", stat: wire.Stat{AverageConcurrentRequests: 3}},
		{name: "a second old", stat: wire.Stat{Timestamp: now - 1, RequestCount: 10}},
		{name: "at the edges", stat: wire.Stat{Timestamp: now + DefaultMaxFutureSkew, ProcessUptime: -1}},
		{name: "far future", stat: wire.Stat{Timestamp: 9_300_000_000}, reason: ReasonBadTimestamp},
		{name: "max int64", stat: wire.Stat{Timestamp: math.MaxInt64}, reason: ReasonBadTimestamp},
		{name: "two minutes ahead", stat: wire.Stat{Timestamp: now + 120}, reason: ReasonBadTimestamp},
		{name: "an hour old", stat: wire.Stat{Timestamp: now - 3600}, reason: ReasonBadTimestamp},
		{name: "negative timestamp", stat: wire.Stat{Timestamp: -5}, reason: ReasonBadTimestamp},
		{name: "NaN", stat: wire.Stat{AverageConcurrentRequests: math.NaN()}, reason: ReasonNonFinite},
		{name: "Inf uptime", stat: wire.Stat{ProcessUptime: math.Inf(1)}, reason: ReasonNonFinite},
		{name: "-Inf requests", stat: wire.Stat{RequestCount: math.Inf(-1)}, reason: ReasonNonFinite},
		{name: "negative concurrency", stat: wire.Stat{AverageConcurrentRequests: -100}, reason: ReasonNegative},
		{name: "negative proxied", stat: wire.Stat{ProxiedRequestCount: -1}, reason: ReasonNegative},
		{name: "huge concurrency", stat: wire.Stat{AverageConcurrentRequests: 1e12}, reason: ReasonHuge},
		{name: "huge proxied concurrency", stat: wire.Stat{AverageProxiedConcurrentRequests: 2e6}, reason: ReasonHuge},
	}
	h := start(t, Options{}, len(tests))
	c := h.dial(t, "/", nil)
	var frame []wire.StatMessage
	wantDrops := map[string]float64{}
	var want []string
	for _, tc := range tests {
		frame = append(frame, wire.StatMessage{Key: types.NamespacedName{Namespace: "ns", Name: tc.name}, Stat: tc.stat})
		if tc.reason == "" {
			want = append(want, tc.name)
		} else {
			wantDrops[tc.reason]++
		}
	}
	send(t, c, websocket.BinaryMessage, wire.MarshalMessages(frame))
	// Then one good stat, so everything before it was handled once it arrives.
	send(t, c, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "last"}}}))
	var got []string
	for m := h.next(t); m.Key.Name != "last"; m = h.next(t) {
		got = append(got, m.Key.Name)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("delivered %v, want %v", got, want)
	}
	for reason, n := range wantDrops {
		if d := h.dropped(reason); d != n {
			t.Errorf("dropped{reason=%s} = %v, want %v", reason, d, n)
		}
	}
}

// tinyEntries is a frame of n entries of 4 bytes each: an empty key and an empty (but present) stat,
// the cheapest entry that decodes to a whole StatMessage.
func tinyEntries(n int) []byte {
	return bytes.Repeat([]byte{0x0a, 0x02, 0x1a, 0x00}, n)
}

func TestTooManyEntries(t *testing.T) {
	h := start(t, Options{MaxEntriesPerFrame: 100}, 200)
	c := h.dial(t, "/", nil)
	send(t, c, websocket.BinaryMessage, tinyEntries(101))
	send(t, c, websocket.BinaryMessage, tinyEntries(100))
	for range 100 {
		h.next(t)
	}
	if d := h.dropped(ReasonTooManyEntries); d != 1 {
		t.Fatalf("dropped{too_many_entries} = %v, want 1", d)
	}
	if len(h.out) != 0 {
		t.Fatalf("%d more stats delivered, want the 101-entry frame refused whole", len(h.out))
	}
}

func TestMaxConnections(t *testing.T) {
	h := start(t, Options{MaxConnections: 2}, 4)
	first := h.dial(t, "/", nil)
	h.dial(t, "/", nil)
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+h.addr+"/", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection: err %v, response %v; want 503", err, resp)
	}
	if d := h.dropped(ReasonTooManyConns); d != 1 {
		t.Fatalf("dropped{too_many_connections} = %v, want 1", d)
	}
	first.Close()
	testutil.Eventually(t, "a slot freed", func() bool {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+h.addr+"/", nil)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// halfFrame starts a masked binary frame announcing size payload bytes and sends sent of them.
func halfFrame(size, sent int) []byte {
	var b bytes.Buffer
	b.WriteByte(0x82) // FIN, binary
	b.WriteByte(0x80 | 127)
	binary.Write(&b, binary.BigEndian, uint64(size))
	b.Write([]byte{0, 0, 0, 0}) // mask key 0: payload as is
	b.Write(make([]byte, sent))
	return b.Bytes()
}

// TestFrameTimeout: a client that stops mid-frame is cut after FrameTimeout (its buffer freed), while
// an idle connection between frames is kept however long it stays quiet.
func TestFrameTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	h := start(t, Options{FrameTimeout: timeout}, 4)
	idle := h.dial(t, "/", nil)
	stuck := h.dial(t, "/", nil)
	if _, err := stuck.UnderlyingConn().Write(halfFrame(1<<20, 512<<10)); err != nil {
		t.Fatal(err)
	}
	stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := stuck.NextReader(); err == nil {
		t.Fatal("the connection stuck mid-frame is still open")
	}
	if d := h.dropped(ReasonFrameTimeout); d != 1 {
		t.Fatalf("dropped{frame_timeout} = %v, want 1", d)
	}
	// Well past the timeout, the idle connection still delivers.
	send(t, idle, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "idle"}}}))
	if m := h.next(t); m.Key.Name != "idle" {
		t.Fatalf("got %+v", m)
	}
}

// TestFrameMemoryBudget: frames being read count against one server-wide budget; the connection whose
// frame would go over it is closed, and the budget comes back when a stalled frame's connection ends.
func TestFrameMemoryBudget(t *testing.T) {
	h := start(t, Options{MaxFrameMemory: 1 << 20}, 4)
	first := h.dial(t, "/", nil)
	if _, err := first.UnderlyingConn().Write(halfFrame(1<<20, 768<<10)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "first frame held", func() bool { return h.s.frameBytes.Load() == 768<<10 })
	second := h.dial(t, "/", nil)
	if _, err := second.UnderlyingConn().Write(halfFrame(1<<20, 512<<10)); err != nil {
		t.Fatal(err)
	}
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := second.NextReader(); err == nil {
		t.Fatal("the connection over the budget is still open")
	}
	if d := h.dropped(ReasonMemoryBudget); d != 1 {
		t.Fatalf("dropped{frame_memory_budget} = %v, want 1", d)
	}
	first.Close()
	testutil.Eventually(t, "budget back", func() bool { return h.s.frameBytes.Load() == 0 })
	third := h.dial(t, "/", nil)
	send(t, third, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "after"}}}))
	if m := h.next(t); m.Key.Name != "after" {
		t.Fatalf("got %+v", m)
	}
}

// TestLogSampling: a connection sending garbage all the time logs at the 1st, 2nd, 4th... drop of each
// reason; another connection has its own samples.
func TestLogSampling(t *testing.T) {
	h := start(t, Options{}, 4)
	for conn := range 2 {
		c := h.dial(t, "/", nil)
		for range 100 {
			send(t, c, websocket.TextMessage, []byte("x"))
		}
		send(t, c, websocket.BinaryMessage, wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "sync"}}}))
		h.next(t)
		// 1, 2, 4, 8, 16, 32, 64 per connection.
		if n := h.logs.FilterMessage("Dropped stats").Len(); n != 7*(conn+1) {
			t.Fatalf("after connection %d: %d log lines for 100 drops each, want %d", conn, n, 7*(conn+1))
		}
	}
	if d := h.dropped(ReasonText); d != 200 {
		t.Fatalf("dropped{text_frame} = %v, want every drop counted (200)", d)
	}
}

// FuzzHandleFrame: whatever the frame, no more than MaxEntriesPerFrame stats come out, and each passes
// validation.
func FuzzHandleFrame(f *testing.F) {
	f.Add(tinyEntries(3))
	f.Add(tinyEntries(9))
	f.Add(wire.MarshalMessages([]wire.StatMessage{{Stat: wire.Stat{Timestamp: math.MaxInt64, AverageConcurrentRequests: math.NaN()}}}))
	f.Add(wire.MarshalMessages([]wire.StatMessage{{Stat: wire.Stat{Timestamp: epoch.Unix(), RequestCount: 5}}}))
	const maxEntries = 8
	f.Fuzz(func(t *testing.T, data []byte) {
		out := make(chan wire.StatMessage, 2*maxEntries) // more than may come out: a send never blocks
		s := New("unused", out, Options{MaxEntriesPerFrame: maxEntries}, clocktesting.NewFakeClock(epoch), zap.NewNop().Sugar())
		c := &connState{logger: zap.NewNop().Sugar(), samples: sampler{}}
		if !s.handleFrame(c, websocket.BinaryMessage, data, out) {
			t.Fatal("handleFrame reported a shutdown")
		}
		if len(out) > maxEntries {
			t.Fatalf("%d stats from one frame, limit %d", len(out), maxEntries)
		}
		for len(out) > 0 {
			m := <-out
			if r := s.lim.validate(&m.Stat, epoch.Unix()); r != "" {
				t.Fatalf("delivered an invalid stat (%s): %+v", r, m)
			}
		}
	})
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkHostileConnections opens connections that each misbehave, and reports the server's heap per
// connection while they hold it (bytes/conn-held) and once the server cut them or they went quiet
// (bytes/conn-after), and what an open idle connection costs, both ends (bytes/conn-idle-both-ends):
//   - half-frame: starts a 1 MiB frame, sends half and stalls, until the frame timeout;
//   - whole-frame-then-idle: sends a whole 1 MiB frame of padding, then stays open and quiet.
func BenchmarkHostileConnections(b *testing.B) {
	const conns = 64
	const timeout = 300 * time.Millisecond
	whole := wire.MarshalMessages([]wire.StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "r"}}})
	pad := DefaultMaxFrameBytes - len(whole) - 4 // an unknown field 15 of wire type bytes, 3-byte length
	whole = append(whole, 0x7a, byte(pad&0x7f|0x80), byte(pad>>7&0x7f|0x80), byte(pad>>14))
	whole = append(whole, make([]byte, pad)...)
	for _, tc := range []struct {
		name string
		act  func(c *websocket.Conn) error
		cut  bool
	}{
		{name: "half-frame", cut: true, act: func(c *websocket.Conn) error {
			_, err := c.UnderlyingConn().Write(halfFrame(1<<20, 512<<10))
			return err
		}},
		{name: "whole-frame-then-idle", act: func(c *websocket.Conn) error {
			return c.WriteMessage(websocket.BinaryMessage, whole)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				out := make(chan wire.StatMessage, conns)
				s := New("unused", out, Options{FrameTimeout: timeout}, clocktesting.NewFakeClock(epoch), zap.NewNop().Sugar())
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				go s.Serve(l)
				empty := heapInUse()
				var cs []*websocket.Conn
				for range conns {
					c, _, err := websocket.DefaultDialer.Dial("ws://"+l.Addr().String()+"/", nil)
					if err != nil {
						b.Fatal(err)
					}
					cs = append(cs, c)
				}
				base := heapInUse() // the connections, open and idle
				for _, c := range cs {
					if err := tc.act(c); err != nil {
						b.Fatal(err)
					}
				}
				// Let the server read what was sent (well inside the timeout).
				time.Sleep(timeout / 3)
				held := heapInUse()
				if tc.cut {
					for _, c := range cs {
						c.SetReadDeadline(time.Now().Add(10 * time.Second))
						c.NextReader() // ends when the server cuts the connection
					}
				} else {
					for range conns {
						<-out
					}
				}
				after := heapInUse()
				// Both ends live in this process: the idle figure includes the client's side.
				b.ReportMetric(float64(int64(base)-int64(empty))/conns, "bytes/conn-idle-both-ends")
				b.ReportMetric(float64(int64(held)-int64(base))/conns, "bytes/conn-held")
				b.ReportMetric(float64(int64(after)-int64(base))/conns, "bytes/conn-after")
				for _, c := range cs {
					c.Close()
				}
				s.Shutdown(b.Context())
			}
		})
	}
}

// BenchmarkAmplifyingFrame is a 1 MiB frame of 4-byte entries: refused by the entry count before
// decoding, it costs no allocation per entry (upstream decodes ~262k messages, ~25 MB).
func BenchmarkAmplifyingFrame(b *testing.B) {
	frame := tinyEntries(DefaultMaxFrameBytes / 4)
	out := make(chan wire.StatMessage, 1)
	s := New("unused", out, Options{}, clocktesting.NewFakeClock(epoch), zap.NewNop().Sugar())
	c := &connState{logger: zap.NewNop().Sugar(), samples: sampler{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		s.handleFrame(c, websocket.BinaryMessage, frame, out)
	}
}
