package wire

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	upstream "knative.dev/serving/pkg/autoscaler/metrics"
)

func fromUpstreamStat(s *upstream.Stat) Stat {
	return Stat{
		PodName:                          s.PodName,
		AverageConcurrentRequests:        s.AverageConcurrentRequests,
		AverageProxiedConcurrentRequests: s.AverageProxiedConcurrentRequests,
		RequestCount:                     s.RequestCount,
		ProxiedRequestCount:              s.ProxiedRequestCount,
		ProcessUptime:                    s.ProcessUptime,
		Timestamp:                        s.Timestamp,
	}
}

func toUpstreamStat(s *Stat) upstream.Stat {
	return upstream.Stat{
		PodName:                          s.PodName,
		AverageConcurrentRequests:        s.AverageConcurrentRequests,
		AverageProxiedConcurrentRequests: s.AverageProxiedConcurrentRequests,
		RequestCount:                     s.RequestCount,
		ProxiedRequestCount:              s.ProxiedRequestCount,
		ProcessUptime:                    s.ProcessUptime,
		Timestamp:                        s.Timestamp,
	}
}

// fromUpstreamMessages is what upstream's stat server delivers: entries with a nil stat are skipped.
func fromUpstreamMessages(w *upstream.WireStatMessages) (msgs []StatMessage, skipped int) {
	for _, m := range w.Messages {
		if m.Stat == nil {
			skipped++
			continue
		}
		msgs = append(msgs, StatMessage{Key: types.NamespacedName{Namespace: m.Namespace, Name: m.Name}, Stat: fromUpstreamStat(m.Stat)})
	}
	return msgs, skipped
}

func toUpstreamMessages(msgs []StatMessage) upstream.WireStatMessages {
	sms := make([]upstream.StatMessage, len(msgs))
	for i, m := range msgs {
		sms[i] = upstream.StatMessage{Key: m.Key, Stat: toUpstreamStat(&m.Stat)}
	}
	return upstream.ToWireStatMessages(sms)
}

func floatSame(a, b float64, zeroSigned bool) bool {
	if math.Float64bits(a) == math.Float64bits(b) {
		return true
	}
	return !zeroSigned && a == 0 && b == 0
}

// statSame compares bit for bit (NaN payloads included); with zeroSigned false, -0 equals +0, which an
// encode/decode round trip cannot keep apart (gogo omits both).
func statSame(a, b Stat, zeroSigned bool) bool {
	return a.PodName == b.PodName && a.Timestamp == b.Timestamp &&
		floatSame(a.AverageConcurrentRequests, b.AverageConcurrentRequests, zeroSigned) &&
		floatSame(a.AverageProxiedConcurrentRequests, b.AverageProxiedConcurrentRequests, zeroSigned) &&
		floatSame(a.RequestCount, b.RequestCount, zeroSigned) &&
		floatSame(a.ProxiedRequestCount, b.ProxiedRequestCount, zeroSigned) &&
		floatSame(a.ProcessUptime, b.ProcessUptime, zeroSigned)
}

func messagesSame(a, b []StatMessage, zeroSigned bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !statSame(a[i].Stat, b[i].Stat, zeroSigned) {
			return false
		}
	}
	return true
}

func randString(r *rand.Rand) string {
	switch r.IntN(5) {
	case 0:
		return ""
	case 1:
		return "pod-" + string(rune('a'+r.IntN(26)))
	case 2:
		return "ünïcödé-名前"
	default:
		b := make([]byte, r.IntN(300)) // crosses the 1-byte varint length boundary
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
}

func randFloat(r *rand.Rand) float64 {
	switch r.IntN(10) {
	case 0:
		return 0
	case 1:
		return math.Copysign(0, -1)
	case 2:
		return math.NaN()
	case 3:
		return math.Inf(1 - 2*r.IntN(2))
	case 4:
		return math.Float64frombits(r.Uint64())
	case 5:
		return float64(r.IntN(1000))
	default:
		return r.Float64() * 100
	}
}

func randInt64(r *rand.Rand) int64 {
	switch r.IntN(5) {
	case 0:
		return 0
	case 1:
		return -r.Int64()
	case 2:
		return math.MaxInt64
	default:
		return 1_700_000_000 + r.Int64N(1_000_000_000)
	}
}

func randStat(r *rand.Rand) Stat {
	return Stat{
		PodName:                          randString(r),
		AverageConcurrentRequests:        randFloat(r),
		AverageProxiedConcurrentRequests: randFloat(r),
		RequestCount:                     randFloat(r),
		ProxiedRequestCount:              randFloat(r),
		ProcessUptime:                    randFloat(r),
		Timestamp:                        randInt64(r),
	}
}

func randMessages(r *rand.Rand) []StatMessage {
	msgs := make([]StatMessage, r.IntN(6))
	for i := range msgs {
		msgs[i] = StatMessage{Key: types.NamespacedName{Namespace: randString(r), Name: randString(r)}, Stat: randStat(r)}
	}
	return msgs
}

func TestStatDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		s := randStat(r)
		us := toUpstreamStat(&s)
		want, err := us.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got := AppendStat(nil, &s)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: AppendStat(%+v) = %x, upstream %x", i, s, got, want)
		}
		if StatSize(&s) != len(want) || us.Size() != len(want) {
			t.Fatalf("case %d: StatSize = %d, want %d", i, StatSize(&s), len(want))
		}
		dec, err := UnmarshalStat(want)
		if err != nil {
			t.Fatalf("case %d: UnmarshalStat: %v", i, err)
		}
		var back upstream.Stat
		if err := back.Unmarshal(got); err != nil {
			t.Fatalf("case %d: upstream Unmarshal of Thaw bytes: %v", i, err)
		}
		if !statSame(dec, s, false) || !statSame(fromUpstreamStat(&back), s, false) {
			t.Fatalf("case %d: round trip %+v: Thaw %+v, upstream %+v", i, s, dec, back)
		}
	}
}

func TestMessagesDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 3000 {
		msgs := randMessages(r)
		uw := toUpstreamMessages(msgs)
		want, err := uw.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got := MarshalMessages(msgs)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: MarshalMessages = %x, upstream %x", i, got, want)
		}
		if len(got) != cap(got) {
			t.Fatalf("case %d: MarshalMessages over-allocated: len %d cap %d", i, len(got), cap(got))
		}
		dec, skipped, err := UnmarshalMessages(want)
		if err != nil || skipped != 0 {
			t.Fatalf("case %d: UnmarshalMessages: %v, skipped %d", i, err, skipped)
		}
		var back upstream.WireStatMessages
		if err := back.Unmarshal(got); err != nil {
			t.Fatalf("case %d: upstream Unmarshal of Thaw bytes: %v", i, err)
		}
		ub, _ := fromUpstreamMessages(&back)
		if !messagesSame(dec, msgs, false) || !messagesSame(ub, msgs, false) {
			t.Fatalf("case %d: round trip mismatch:\n in  %+v\n thaw %+v\n up  %+v", i, msgs, dec, ub)
		}
	}
}

// checkAgainstUpstream decodes b with both decoders. Thaw must never accept what gogo rejects, and when
// both accept they must agree bit for bit.
func checkAgainstUpstream(t *testing.T, b []byte) (accepted bool) {
	t.Helper()
	msgs, skipped, err := UnmarshalMessages(b)
	var uw upstream.WireStatMessages
	uerr := uw.Unmarshal(b)
	if err == nil && uerr != nil {
		t.Fatalf("Thaw accepted %x that upstream rejects: %v", b, uerr)
	}
	if err != nil {
		if msgs != nil || skipped != 0 {
			t.Fatalf("error %v with results %v, %d", err, msgs, skipped)
		}
		return false
	}
	umsgs, uskipped := fromUpstreamMessages(&uw)
	if skipped != uskipped || !messagesSame(msgs, umsgs, true) {
		t.Fatalf("decode %x: Thaw %+v (skipped %d), upstream %+v (skipped %d)", b, msgs, skipped, umsgs, uskipped)
	}
	// Round trip: what we decode, we encode so that we and upstream decode it the same again.
	re := MarshalMessages(msgs)
	again, skipped2, err := UnmarshalMessages(re)
	if err != nil || skipped2 != 0 || !messagesSame(again, msgs, false) {
		t.Fatalf("re-decode of %x: %+v, %v", re, again, err)
	}
	return true
}

func TestHandWrittenInputs(t *testing.T) {
	stat := MarshalStat(&Stat{PodName: "p", RequestCount: 3, Timestamp: 5})
	entry := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	field := func(num byte, typ byte, payload []byte) []byte {
		return append([]byte{num<<3 | typ, byte(len(payload))}, payload...)
	}
	wsm := func(ns, name string, stat []byte) []byte {
		b := entry(field(1, 2, []byte(ns)), field(2, 2, []byte(name)))
		if stat != nil {
			b = append(b, field(3, 2, stat)...)
		}
		return field(1, 2, b)
	}
	tests := []struct {
		name        string
		in          []byte
		wantErr     bool
		wantMsgs    int
		wantSkipped int
	}{
		{name: "empty", in: nil},
		{name: "one", in: wsm("ns", "rev", stat), wantMsgs: 1},
		{name: "empty stat is a stat", in: wsm("ns", "rev", []byte{}), wantMsgs: 1},
		{name: "nil stat skipped", in: entry(wsm("ns", "a", nil), wsm("ns", "b", stat)), wantMsgs: 1, wantSkipped: 1},
		{name: "unknown fields skipped", in: entry(wsm("ns", "rev", entry(stat, field(9, 2, []byte("x")), []byte{0x50, 0x01})), []byte{0x15, 1, 2, 3, 4}), wantMsgs: 1},
		{name: "truncated tag", in: []byte{0x0a, 0x80}, wantErr: true},
		{name: "truncated length", in: []byte{0x0a, 0x05, 0x01}, wantErr: true},
		{name: "truncated double", in: wsm("ns", "rev", []byte{0x11, 1, 2, 3}), wantErr: true},
		{name: "wrong wire type for known field", in: wsm("ns", "rev", []byte{0x10, 0x01}), wantErr: true},
		{name: "wrong wire type for messages", in: []byte{0x08, 0x01}, wantErr: true},
		{name: "field zero", in: []byte{0x00, 0x01}, wantErr: true},
		{name: "end group without start", in: []byte{0x0c}, wantErr: true},
		{name: "invalid wire type 7", in: []byte{0x0f}, wantErr: true},
		{name: "varint overflow", in: wsm("ns", "rev", []byte{0x38, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), wantErr: true},
		{name: "huge length", in: []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, wantErr: true},
		{name: "garbage", in: []byte("GET / HTTP/1.1\r\n"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, skipped, err := UnmarshalMessages(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(msgs) != tc.wantMsgs || skipped != tc.wantSkipped {
				t.Fatalf("got %d msgs, %d skipped; want %d, %d", len(msgs), skipped, tc.wantMsgs, tc.wantSkipped)
			}
			checkAgainstUpstream(t, tc.in)
		})
	}
}

func TestRepeatedStatMergesLikeGogo(t *testing.T) {
	a := MarshalStat(&Stat{PodName: "a", RequestCount: 1, Timestamp: 9})
	b := MarshalStat(&Stat{AverageConcurrentRequests: 2})
	inner := append([]byte{0x1a, byte(len(a))}, a...)
	inner = append(inner, append([]byte{0x1a, byte(len(b))}, b...)...)
	in := append([]byte{0x0a, byte(len(inner))}, inner...)
	msgs, _, err := UnmarshalMessages(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{PodName: "a", RequestCount: 1, AverageConcurrentRequests: 2, Timestamp: 9}
	if len(msgs) != 1 || msgs[0].Stat != want {
		t.Fatalf("got %+v, want one message with %+v", msgs, want)
	}
	checkAgainstUpstream(t, in)
}

// Random mutations of valid encodings: truncation, byte flips, insertions.
func TestMutationsAgainstUpstream(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	accepted := 0
	for range 20000 {
		b := MarshalMessages(randMessages(r))
		if len(b) == 0 {
			continue
		}
		switch r.IntN(3) {
		case 0:
			b = b[:r.IntN(len(b))]
		case 1:
			for range 1 + r.IntN(3) {
				b[r.IntN(len(b))] = byte(r.IntN(256))
			}
		default:
			i := r.IntN(len(b))
			b = append(b[:i:i], append([]byte{byte(r.IntN(256))}, b[i:]...)...)
		}
		if checkAgainstUpstream(t, b) {
			accepted++
		}
	}
	if accepted == 0 {
		t.Fatal("no mutated input was accepted; the test exercises nothing but errors")
	}
}

func TestEncodeAllocations(t *testing.T) {
	msgs := []StatMessage{{Key: types.NamespacedName{Namespace: "ns", Name: "rev"}, Stat: Stat{PodName: "activator-1", AverageConcurrentRequests: 3, RequestCount: 10, Timestamp: 1}}}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = AppendMessages(buf[:0], msgs) }); n != 0 {
		t.Fatalf("AppendMessages into a sized buffer allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = MarshalMessages(msgs) }); n != 1 {
		t.Fatalf("MarshalMessages allocates %v times, want 1", n)
	}
	// A typical activator batch: one pod, one namespace, several revisions. One slice, one string per
	// revision name, the namespace and the pod name once.
	batch := make([]StatMessage, 4)
	for i := range batch {
		batch[i] = StatMessage{Key: types.NamespacedName{Namespace: "default", Name: "rev-" + string(rune('a'+i))}, Stat: Stat{PodName: "activator-1", RequestCount: 1}}
	}
	in := MarshalMessages(batch)
	if n := testing.AllocsPerRun(100, func() { _, _, _ = UnmarshalMessages(in) }); n != 1+4+1+1 {
		t.Fatalf("UnmarshalMessages of a 4-revision batch allocates %v times, want 7", n)
	}
}

func FuzzUnmarshalMessages(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 8 {
		f.Add(MarshalMessages(randMessages(r)))
	}
	f.Add([]byte{0x0a, 0x00})
	f.Add([]byte{0x0a, 0x02, 0x1a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgainstUpstream(t, b)
	})
}

func FuzzUnmarshalStat(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	for range 8 {
		s := randStat(r)
		f.Add(MarshalStat(&s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalStat(b)
		var us upstream.Stat
		uerr := us.Unmarshal(b)
		if err == nil && uerr != nil {
			t.Fatalf("Thaw accepted %x that upstream rejects: %v", b, uerr)
		}
		if err != nil {
			return
		}
		if !statSame(s, fromUpstreamStat(&us), true) {
			t.Fatalf("decode %x: Thaw %+v, upstream %+v", b, s, us)
		}
		again, err := UnmarshalStat(MarshalStat(&s))
		if err != nil || !statSame(again, s, false) {
			t.Fatalf("round trip of %+v: %+v, %v", s, again, err)
		}
	})
}

func BenchmarkMarshalMessages(b *testing.B) {
	msgs := make([]StatMessage, 4)
	for i := range msgs {
		msgs[i] = StatMessage{Key: types.NamespacedName{Namespace: "default", Name: "hello-0000" + string(rune('1'+i))}, Stat: Stat{PodName: "activator-abc", AverageConcurrentRequests: 1.5, RequestCount: 7, Timestamp: 1_700_000_000}}
	}
	b.Run("thaw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = MarshalMessages(msgs)
		}
	})
	b.Run("upstream", func(b *testing.B) {
		sms := make([]upstream.StatMessage, len(msgs))
		for i, m := range msgs {
			sms[i] = upstream.StatMessage{Key: m.Key, Stat: toUpstreamStat(&m.Stat)}
		}
		b.ReportAllocs()
		for b.Loop() {
			w := upstream.ToWireStatMessages(sms)
			if _, err := w.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkUnmarshalMessages(b *testing.B) {
	msgs := make([]StatMessage, 4)
	for i := range msgs {
		msgs[i] = StatMessage{Key: types.NamespacedName{Namespace: "default", Name: "hello-0000" + string(rune('1'+i))}, Stat: Stat{PodName: "activator-abc", AverageConcurrentRequests: 1.5, RequestCount: 7, Timestamp: 1_700_000_000}}
	}
	in := MarshalMessages(msgs)
	b.Run("thaw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := UnmarshalMessages(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("upstream", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var w upstream.WireStatMessages
			if err := w.Unmarshal(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}
