// Package wire is the only place in Thaw that knows the protobuf layout of the stats the activator streams
// to the autoscaler (and that queue-proxy serves on :9090/metrics).
//
// The layout is upstream's stat.proto (package metrics):
//
//	message Stat { string pod_name = 1; double average_concurrent_requests = 2;
//	  double average_proxied_concurrent_requests = 3; double request_count = 4;
//	  double proxied_request_count = 5; double process_uptime = 6; int64 timestamp = 7; }
//	message WireStatMessage { string namespace = 1; string name = 2; Stat stat = 3; }
//	message WireStatMessages { repeated WireStatMessage messages = 1; }
//
// Upstream marshals with gogo-protobuf (gogofaster). The encoder here writes the very same bytes: fields in
// number order, zero scalars (including -0.0) omitted, the stat of each WireStatMessage always present.
// The decoder accepts everything gogo produces and follows gogo's rules where they matter: unknown fields
// are skipped, a known field with the wrong wire type is an error, a repeated stat field merges into the
// previous one, the last scalar wins. It is slightly stricter than gogo on malformed varints (a 10-byte
// varint overflowing 64 bits), field numbers above 2^29-1 and groups whose end number does not match; none
// of those can come from a real encoder. Decoding never panics: truncated or garbage input is an error.
package wire

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"k8s.io/apimachinery/pkg/types"
)

// Stat is one measurement of one pod (or of the activator, for one revision) at a point in time.
type Stat struct {
	PodName                          string
	AverageConcurrentRequests        float64
	AverageProxiedConcurrentRequests float64
	RequestCount                     float64
	ProxiedRequestCount              float64
	ProcessUptime                    float64
	// Timestamp is in unix seconds.
	Timestamp int64
}

// StatMessage is a Stat for one revision.
type StatMessage struct {
	Key  types.NamespacedName
	Stat Stat
}

// Field numbers of stat.proto.
const (
	statPodName              protowire.Number = 1
	statAvgConcurrent        protowire.Number = 2
	statAvgProxiedConcurrent protowire.Number = 3
	statRequestCount         protowire.Number = 4
	statProxiedRequestCount  protowire.Number = 5
	statProcessUptime        protowire.Number = 6
	statTimestamp            protowire.Number = 7
	msgNamespace             protowire.Number = 1
	msgName                  protowire.Number = 2
	msgStat                  protowire.Number = 3
	messagesMessages         protowire.Number = 1
	fixed64Size                               = 8
	statName                                  = "Stat"
	wireStatMessageName                       = "WireStatMessage"
	wireStatMessagesName                      = "WireStatMessages"
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("wire: malformed protobuf")

// StatSize is the encoded size of s in bytes.
func StatSize(s *Stat) int {
	n := 0
	if len(s.PodName) > 0 {
		n += 1 + protowire.SizeBytes(len(s.PodName))
	}
	for _, f := range [...]float64{s.AverageConcurrentRequests, s.AverageProxiedConcurrentRequests,
		s.RequestCount, s.ProxiedRequestCount, s.ProcessUptime} {
		if f != 0 {
			n += 1 + fixed64Size
		}
	}
	if s.Timestamp != 0 {
		n += 1 + protowire.SizeVarint(uint64(s.Timestamp))
	}
	return n
}

// AppendStat appends the encoding of s to b, exactly as gogo's Stat.Marshal would produce it.
func AppendStat(b []byte, s *Stat) []byte {
	if len(s.PodName) > 0 {
		b = protowire.AppendTag(b, statPodName, protowire.BytesType)
		b = protowire.AppendString(b, s.PodName)
	}
	b = appendDouble(b, statAvgConcurrent, s.AverageConcurrentRequests)
	b = appendDouble(b, statAvgProxiedConcurrent, s.AverageProxiedConcurrentRequests)
	b = appendDouble(b, statRequestCount, s.RequestCount)
	b = appendDouble(b, statProxiedRequestCount, s.ProxiedRequestCount)
	b = appendDouble(b, statProcessUptime, s.ProcessUptime)
	if s.Timestamp != 0 {
		b = protowire.AppendTag(b, statTimestamp, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s.Timestamp))
	}
	return b
}

func appendDouble(b []byte, num protowire.Number, f float64) []byte {
	// gogo tests `f != 0`, so -0.0 is omitted too (and NaN is written).
	if f == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(f))
}

func messageSize(m *StatMessage) (total, statLen int) {
	statLen = StatSize(&m.Stat)
	if len(m.Key.Namespace) > 0 {
		total += 1 + protowire.SizeBytes(len(m.Key.Namespace))
	}
	if len(m.Key.Name) > 0 {
		total += 1 + protowire.SizeBytes(len(m.Key.Name))
	}
	total += 1 + protowire.SizeBytes(statLen)
	return total, statLen
}

// MessagesSize is the encoded size of msgs as WireStatMessages.
func MessagesSize(msgs []StatMessage) int {
	n := 0
	for i := range msgs {
		sz, _ := messageSize(&msgs[i])
		n += 1 + protowire.SizeBytes(sz)
	}
	return n
}

// AppendMessages appends msgs encoded as WireStatMessages to b.
func AppendMessages(b []byte, msgs []StatMessage) []byte {
	for i := range msgs {
		m := &msgs[i]
		sz, statLen := messageSize(m)
		b = protowire.AppendTag(b, messagesMessages, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sz))
		if len(m.Key.Namespace) > 0 {
			b = protowire.AppendTag(b, msgNamespace, protowire.BytesType)
			b = protowire.AppendString(b, m.Key.Namespace)
		}
		if len(m.Key.Name) > 0 {
			b = protowire.AppendTag(b, msgName, protowire.BytesType)
			b = protowire.AppendString(b, m.Key.Name)
		}
		// Upstream always sets the stat pointer, so the field is present even for an all-zero stat.
		b = protowire.AppendTag(b, msgStat, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(statLen))
		b = AppendStat(b, &m.Stat)
	}
	return b
}

// MarshalMessages encodes msgs as WireStatMessages in one exactly sized allocation.
func MarshalMessages(msgs []StatMessage) []byte {
	return AppendMessages(make([]byte, 0, MessagesSize(msgs)), msgs)
}

// MarshalStat encodes s as a Stat in one exactly sized allocation.
func MarshalStat(s *Stat) []byte {
	return AppendStat(make([]byte, 0, StatSize(s)), s)
}

// UnmarshalStat decodes a Stat.
func UnmarshalStat(b []byte) (Stat, error) {
	var s Stat
	err := mergeStat(b, &s, nil)
	return s, err
}

// UnmarshalMessages decodes WireStatMessages. Entries without a stat are skipped (upstream skips them too,
// "to allow for future schema changes") and counted in skippedNoStat. On error, msgs is nil.
func UnmarshalMessages(b []byte) (msgs []StatMessage, skippedNoStat int, err error) {
	// An activator's batch carries its own pod name in every entry, and often one namespace for many
	// revisions: allocate each such string once per frame.
	var pod, ns string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, decodeErr(wireStatMessagesName, protowire.ParseError(n))
		}
		if num != messagesMessages {
			if b, err = skipField(b, n, num, typ, wireStatMessagesName); err != nil {
				return nil, 0, err
			}
			continue
		}
		if typ != protowire.BytesType {
			return nil, 0, wrongType(wireStatMessagesName, num, typ, protowire.BytesType)
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil, 0, decodeErr(wireStatMessagesName, protowire.ParseError(m))
		}
		b = b[n+m:]
		sm, hasStat, err := unmarshalMessage(v, &pod, &ns)
		if err != nil {
			return nil, 0, err
		}
		if !hasStat {
			skippedNoStat++
			continue
		}
		if msgs == nil {
			msgs = make([]StatMessage, 0, countEntries(b)+1)
		}
		msgs = append(msgs, sm)
	}
	return msgs, skippedNoStat, nil
}

// countEntries counts the top-level entries left in b, so the result slice is allocated once. It only reads
// tags and lengths; malformed input just stops the count (decoding reports the error).
func countEntries(b []byte) int {
	n := 0
	for len(b) > 0 {
		num, typ, t := protowire.ConsumeTag(b)
		if t < 0 {
			break
		}
		v := protowire.ConsumeFieldValue(num, typ, b[t:])
		if v < 0 {
			break
		}
		if num == messagesMessages {
			n++
		}
		b = b[t+v:]
	}
	return n
}

func unmarshalMessage(b []byte, pod, ns *string) (sm StatMessage, hasStat bool, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return sm, false, decodeErr(wireStatMessageName, protowire.ParseError(n))
		}
		switch num {
		case msgNamespace, msgName, msgStat:
			if typ != protowire.BytesType {
				return sm, false, wrongType(wireStatMessageName, num, typ, protowire.BytesType)
			}
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return sm, false, decodeErr(wireStatMessageName, protowire.ParseError(m))
			}
			b = b[n+m:]
			switch num {
			case msgNamespace:
				if string(v) != *ns {
					*ns = string(v)
				}
				sm.Key.Namespace = *ns
			case msgName:
				sm.Key.Name = string(v)
			default:
				// A repeated embedded message merges into the earlier one, as in gogo.
				hasStat = true
				if err := mergeStat(v, &sm.Stat, pod); err != nil {
					return sm, false, err
				}
			}
		default:
			if b, err = skipField(b, n, num, typ, wireStatMessageName); err != nil {
				return sm, false, err
			}
		}
	}
	return sm, hasStat, nil
}

// mergeStat decodes b into s. If lastPod is not nil, a pod name equal to *lastPod reuses that string,
// and a new one is remembered there.
func mergeStat(b []byte, s *Stat, lastPod *string) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return decodeErr(statName, protowire.ParseError(n))
		}
		switch num {
		case statPodName:
			if typ != protowire.BytesType {
				return wrongType(statName, num, typ, protowire.BytesType)
			}
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return decodeErr(statName, protowire.ParseError(m))
			}
			switch {
			case lastPod == nil:
				s.PodName = string(v)
			case string(v) == *lastPod: // compared without allocating
				s.PodName = *lastPod
			default:
				s.PodName = string(v)
				*lastPod = s.PodName
			}
			b = b[n+m:]
		case statAvgConcurrent, statAvgProxiedConcurrent, statRequestCount, statProxiedRequestCount, statProcessUptime:
			if typ != protowire.Fixed64Type {
				return wrongType(statName, num, typ, protowire.Fixed64Type)
			}
			v, m := protowire.ConsumeFixed64(b[n:])
			if m < 0 {
				return decodeErr(statName, protowire.ParseError(m))
			}
			f := math.Float64frombits(v)
			switch num {
			case statAvgConcurrent:
				s.AverageConcurrentRequests = f
			case statAvgProxiedConcurrent:
				s.AverageProxiedConcurrentRequests = f
			case statRequestCount:
				s.RequestCount = f
			case statProxiedRequestCount:
				s.ProxiedRequestCount = f
			default:
				s.ProcessUptime = f
			}
			b = b[n+m:]
		case statTimestamp:
			if typ != protowire.VarintType {
				return wrongType(statName, num, typ, protowire.VarintType)
			}
			v, m := protowire.ConsumeVarint(b[n:])
			if m < 0 {
				return decodeErr(statName, protowire.ParseError(m))
			}
			s.Timestamp = int64(v)
			b = b[n+m:]
		default:
			var err error
			if b, err = skipField(b, n, num, typ, statName); err != nil {
				return err
			}
		}
	}
	return nil
}

// skipField skips an unknown field whose tag took n bytes of b.
func skipField(b []byte, n int, num protowire.Number, typ protowire.Type, msg string) ([]byte, error) {
	if typ == protowire.EndGroupType {
		return nil, fmt.Errorf("%w: %s: end group for field %d without a start", ErrMalformed, msg, num)
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return nil, decodeErr(msg, protowire.ParseError(m))
	}
	return b[n+m:], nil
}

func decodeErr(msg string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrMalformed, msg, err)
}

func wrongType(msg string, num protowire.Number, got, want protowire.Type) error {
	return fmt.Errorf("%w: %s: field %d has wire type %d, want %d", ErrMalformed, msg, num, got, want)
}
