package nfqueue

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
)

// fakeQueue hands the delayer the IDs sent on in and records the accepted ones with the fake time.
type fakeQueue struct {
	in    chan uint32
	clock *clocktesting.FakeClock

	mu       sync.Mutex
	accepted []uint32
	at       []time.Time
	closed   bool
	done     chan struct{}
}

func newFakeQueue(c *clocktesting.FakeClock) *fakeQueue {
	return &fakeQueue{in: make(chan uint32), clock: c, done: make(chan struct{})}
}

func (f *fakeQueue) receive(fn func(uint32)) error {
	select {
	case id := <-f.in:
		fn(id)
		return nil
	case <-f.done:
		return errors.New("closed")
	}
}

func (f *fakeQueue) accept(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("verdict after close")
	}
	f.accepted = append(f.accepted, id)
	f.at = append(f.at, f.clock.Now())
	return nil
}

func (f *fakeQueue) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	close(f.done)
	return nil
}

func (f *fakeQueue) snapshot() ([]uint32, []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.accepted), slices.Clone(f.at)
}

func TestDelayerHoldsEachPacketTheDelayInOrder(t *testing.T) {
	start := time.Unix(1e9, 0)
	for _, tc := range []struct {
		name      string
		maxQueued int
		// packets arrive at these offsets, all within the first delay
		arrivals []time.Duration
		// each is accepted at arrival+delay unless it overflowed (accepted on arrival)
		wantOverflow []bool
	}{
		{name: "one packet", arrivals: []time.Duration{0}, wantOverflow: []bool{false}},
		{name: "a burst keeps its order", arrivals: []time.Duration{0, 0, 10 * time.Millisecond, 30 * time.Millisecond},
			wantOverflow: []bool{false, false, false, false}},
		{name: "past the cap a packet goes at once and is counted", maxQueued: 2, arrivals: []time.Duration{0, 0, 0, 50 * time.Millisecond},
			wantOverflow: []bool{false, false, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clocktesting.NewFakeClock(start)
			q := newFakeQueue(c)
			delay := 100 * time.Millisecond
			d := start1(t, q, Config{Delay: delay, MaxQueued: tc.maxQueued, Clock: c})
			held := 0
			for i, off := range tc.arrivals {
				c.SetTime(start.Add(off))
				q.in <- uint32(i + 1)
				// Wait for the packet to be held, or accepted at once, before time moves on.
				if tc.wantOverflow[i] {
					testutil.Eventually(t, "the overflow accepted", func() bool {
						ids, _ := q.snapshot()
						return slices.Contains(ids, uint32(i+1))
					})
					continue
				}
				held++
				testutil.Eventually(t, "the packet held", func() bool { return d.held() == held })
			}
			// Step past every delay, one millisecond at a time, so each release sees its own time.
			for c.Now().Before(start.Add(tc.arrivals[len(tc.arrivals)-1] + delay)) {
				c.Step(time.Millisecond)
				want := 0
				for i, off := range tc.arrivals {
					if tc.wantOverflow[i] || !c.Now().Before(start.Add(off+delay)) {
						want++
					}
				}
				testutil.Eventually(t, "the due packets accepted", func() bool {
					ids, _ := q.snapshot()
					return len(ids) >= want
				})
			}
			ids, at := q.snapshot()
			var overflows uint64
			var wantIDs []uint32
			for i := range tc.arrivals {
				if tc.wantOverflow[i] {
					wantIDs = append(wantIDs, uint32(i+1))
					overflows++
				}
			}
			for i := range tc.arrivals {
				if !tc.wantOverflow[i] {
					wantIDs = append(wantIDs, uint32(i+1))
				}
			}
			if !slices.Equal(ids, wantIDs) {
				t.Fatalf("accepted %v, want %v", ids, wantIDs)
			}
			for k, id := range ids {
				i := int(id - 1)
				want := start.Add(tc.arrivals[i] + delay)
				if tc.wantOverflow[i] {
					want = start.Add(tc.arrivals[i])
				}
				if !at[k].Equal(want) {
					t.Errorf("packet %d accepted at +%v, want +%v", id, at[k].Sub(start), want.Sub(start))
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			st := d.Stats()
			if st.Overflow != overflows || st.Delayed != uint64(len(tc.arrivals))-overflows || st.Flushed != 0 || st.Errors != 0 {
				t.Errorf("stats %v", st)
			}
		})
	}
}

func start1(t *testing.T, q queue, cfg Config) *Delayer {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return start(q, cfg)
}

// Close accepts the held packets before it closes the queue: a closed queue drops what it holds.
func TestDelayerCloseFlushesHeldPackets(t *testing.T) {
	c := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	q := newFakeQueue(c)
	d := start1(t, q, Config{Delay: time.Second, Clock: c})
	for id := uint32(1); id <= 3; id++ {
		q.in <- id
	}
	// All three held (a send returns once the reader has the packet, not once it is held) and the
	// releaser waiting on the first one's delay.
	testutil.Eventually(t, "three packets held", func() bool { return d.held() == 3 })
	testutil.Eventually(t, "the releaser waiting", c.HasWaiters)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if ids, _ := q.snapshot(); !slices.Equal(ids, []uint32{1, 2, 3}) {
		t.Errorf("accepted %v before the close", ids)
	}
	if st := d.Stats(); st.Flushed != 3 || st.Delayed != 0 || st.Errors != 0 {
		t.Errorf("stats %v", st)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestConfigValidates(t *testing.T) {
	for _, tc := range []struct {
		cfg     Config
		wantErr string
	}{
		{cfg: Config{Delay: 100 * time.Millisecond}},
		{cfg: Config{}, wantErr: "delay"},
		{cfg: Config{Delay: -time.Second}, wantErr: "delay"},
		{cfg: Config{Delay: time.Hour}, wantErr: "delay"},
		{cfg: Config{Delay: time.Second, MaxQueued: -1}, wantErr: "max queued"},
	} {
		got, err := tc.cfg.withDefaults()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.MaxQueued != DefaultMaxQueued || got.Clock == nil {
			t.Errorf("%+v: %+v %v", tc.cfg, got, err)
		}
	}
}

func TestMessages(t *testing.T) {
	msgs, err := configMessages(7, 8192)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("%v %v", msgs, err)
	}
	for _, m := range msgs {
		if m.Header.Type != 3<<8|2 || m.Header.Flags != netlink.Request|netlink.Acknowledge || binary.BigEndian.Uint16(m.Data[2:4]) != 7 {
			t.Errorf("config message %+v", m)
		}
	}
	attrs, err := netlink.UnmarshalAttributes(msgs[1].Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint16][]byte{}
	for _, a := range attrs {
		got[a.Type] = a.Data
	}
	if !slices.Equal(got[cfgParams], []byte{0, 0, 0, 0, copyMeta}) || binary.BigEndian.Uint32(got[cfgQueueMax]) != 8192 ||
		binary.BigEndian.Uint32(got[cfgFlags]) != flagOpen|flagGSO {
		t.Errorf("params %v", got)
	}

	v := verdictMessage(7, 0x01020304)
	attrs, err = netlink.UnmarshalAttributes(v.Data[4:])
	if err != nil || len(attrs) != 1 || attrs[0].Type != attrVerdictHdr || !slices.Equal(attrs[0].Data, []byte{0, 0, 0, 1, 1, 2, 3, 4}) {
		t.Errorf("verdict %v %v", attrs, err)
	}

	for _, tc := range []struct {
		name    string
		m       netlink.Message
		want    uint32
		ok      bool
		wantErr bool
	}{
		{name: "a packet", m: packetMsg(t, 42), want: 42, ok: true},
		{name: "not a packet", m: netlink.Message{Header: netlink.Header{Type: 3<<8 | 2}}},
		{name: "truncated", m: netlink.Message{Header: netlink.Header{Type: 3 << 8}, Data: []byte{0}}, wantErr: true},
		{name: "no header attribute", m: netlink.Message{Header: netlink.Header{Type: 3 << 8}, Data: nfgen(0)}, wantErr: true},
	} {
		id, ok, err := packetID(tc.m)
		if id != tc.want || ok != tc.ok || (err != nil) != tc.wantErr {
			t.Errorf("%s: %d %v %v", tc.name, id, ok, err)
		}
	}
}

func packetMsg(t *testing.T, id uint32) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	// struct nfqnl_msg_packet_hdr: packet_id, hw_protocol, hook.
	ae.Bytes(attrPacketHdr, append(be32(id), 0x08, 0x00, 3))
	ae.Uint32(3, 0) // NFQA_MARK, to skip
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: 3 << 8}, Data: append(nfgen(0), b...)}
}
