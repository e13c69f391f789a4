package statserver

import (
	"errors"
	"io"
	"math"
	"math/bits"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// Defaults of the limits a hostile or broken client could otherwise turn into memory or poisoned windows.
const (
	// DefaultMaxEntriesPerFrame bounds the entries decoded from one frame. A frame of tiny entries decodes
	// to ~100 bytes per 4 bytes read (1 MiB of them to ~25 MB); 10,000 entries, about 1 MB decoded, still
	// carry one stat per revision for an activator fronting 10,000 busy revisions, about what an honest
	// 1 MiB frame holds.
	DefaultMaxEntriesPerFrame = 10000
	// DefaultMaxConnections bounds open websocket connections: one per activator and a few per autoscaler
	// replica (one per bucket it forwards to) in a large cluster are well below it.
	DefaultMaxConnections = 1000
	// DefaultFrameTimeout bounds the time from a frame's first byte to its last. An honest 1 MiB frame
	// crosses a cluster network in milliseconds; a client that stops mid-frame is cut after it, freeing
	// the frame's buffer. An idle connection between frames is never cut: an activator with no traffic
	// sends nothing, and a cut would cost its next (waking) stat.
	DefaultFrameTimeout = 10 * time.Second
	// DefaultMaxFutureSkew and DefaultMaxAge bound a stamped stat's Timestamp around the server's clock, in
	// seconds. Upstream's activators send none (the server stamps it); forwarders pass on stats a second
	// or so old. The collector drops stats more than a minute ahead too; an old one only lands outside the
	// windows, but one thousands of years off is no clock skew.
	DefaultMaxFutureSkew = 60
	DefaultMaxAge        = 300
	// DefaultMaxStatValue bounds every count and concurrency in a stat: no pod or activator serves a
	// million requests at once or in one reporting second, and one such value would hold a revision at
	// its maximum scale for a whole stable window.
	DefaultMaxStatValue = 1e6
	// DefaultMaxFrameMemory bounds the frames held at once over all connections. Honest frames are a few
	// KiB and handled at once; 64 MiB (128 MiB of buffers at worst, as they grow by doubling) keeps
	// connections that each start a 1 MiB frame and stall from taking the autoscaler's memory (1000 Mi
	// upstream) before FrameTimeout cuts them.
	DefaultMaxFrameMemory = 64 << 20
)

// Drop reasons of the limits and of stat validation.
const (
	ReasonTooManyEntries = "too_many_entries"
	ReasonTooManyConns   = "too_many_connections"
	ReasonFrameTimeout   = "frame_timeout"
	ReasonBadTimestamp   = "bad_timestamp"
	ReasonNonFinite      = "non_finite_value"
	ReasonNegative       = "negative_value"
	ReasonHuge           = "huge_value"
	ReasonMemoryBudget   = "frame_memory_budget"
)

// limitReasons are pre-created so dashboards see zeros.
var limitReasons = []string{ReasonTooManyEntries, ReasonTooManyConns, ReasonFrameTimeout, ReasonBadTimestamp,
	ReasonNonFinite, ReasonNegative, ReasonHuge, ReasonMemoryBudget}

// limits are the resolved limit options of a Server.
type limits struct {
	maxEntries    int
	maxConns      int
	frameTimeout  time.Duration
	maxFutureSkew int64
	maxAge        int64
	maxStatValue  float64
	frameMemory   int64
}

func resolveLimits(o Options) limits {
	l := limits{maxEntries: o.MaxEntriesPerFrame, maxConns: o.MaxConnections, frameTimeout: o.FrameTimeout,
		maxFutureSkew: DefaultMaxFutureSkew, maxAge: DefaultMaxAge, maxStatValue: o.MaxStatValue}
	if l.maxEntries <= 0 {
		l.maxEntries = DefaultMaxEntriesPerFrame
	}
	if l.maxConns <= 0 {
		l.maxConns = DefaultMaxConnections
	}
	if l.frameTimeout <= 0 {
		l.frameTimeout = DefaultFrameTimeout
	}
	if o.MaxTimestampSkew > 0 {
		l.maxFutureSkew = int64(o.MaxTimestampSkew / time.Second)
		l.maxAge = l.maxFutureSkew
	}
	if l.maxStatValue <= 0 {
		l.maxStatValue = DefaultMaxStatValue
	}
	l.frameMemory = o.MaxFrameMemory
	if l.frameMemory <= 0 {
		l.frameMemory = DefaultMaxFrameMemory
	}
	return l
}

// countEntries counts the top-level entries of a WireStatMessages frame, reading only tags and lengths, so
// an amplifying frame is refused before anything is allocated. Malformed input stops the count; decoding
// then reports it.
func countEntries(b []byte, stopAt int) int {
	n := 0
	for len(b) > 0 && n <= stopAt {
		num, typ, t := protowire.ConsumeTag(b)
		if t < 0 {
			break
		}
		v := protowire.ConsumeFieldValue(num, typ, b[t:])
		if v < 0 {
			break
		}
		if num == 1 { // WireStatMessages.messages
			n++
		}
		b = b[t+v:]
	}
	return n
}

// validate returns the reason s must not reach the windows, or "" when it may. now is in unix seconds and
// s.Timestamp is already stamped.
func (l *limits) validate(s *wire.Stat, now int64) string {
	// now is a real unix time, far from both ends of int64: the sums cannot overflow.
	if s.Timestamp > now+l.maxFutureSkew || s.Timestamp < now-l.maxAge {
		return ReasonBadTimestamp
	}
	vals := [...]float64{s.AverageConcurrentRequests, s.AverageProxiedConcurrentRequests, s.RequestCount,
		s.ProxiedRequestCount, s.ProcessUptime}
	for _, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return ReasonNonFinite
		}
	}
	for _, v := range vals[:4] { // uptime is seconds since start, not load
		if v < 0 {
			return ReasonNegative
		}
		if v > l.maxStatValue {
			return ReasonHuge
		}
	}
	return ""
}

// sampler decides which drops of one connection get a log line: the 1st, 2nd, 4th, 8th... of each reason,
// so a client sending garbage many times a second cannot flood the log, and the count says how much.
type sampler map[string]uint64

func (s sampler) hit(reason string, n int) (total uint64, log bool) {
	before := s[reason]
	total = before + uint64(n)
	s[reason] = total
	// Log when the count crosses a power of two.
	return total, bits.Len64(before) != bits.Len64(total)
}

// connState is one connection's read deadline and log sampling.
type connState struct {
	conn    *websocket.Conn
	logger  *zap.SugaredLogger
	samples sampler // read loop only

	// mu orders the read loop's per-frame deadlines with the goodbye's final one, which must win.
	mu    sync.Mutex
	final bool
}

// frameDeadline sets the read deadline of the frame being read (zero: none, between frames), unless the
// goodbye set its own.
func (c *connState) frameDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.final {
		if err := c.conn.SetReadDeadline(t); err != nil {
			c.conn.Close()
		}
	}
}

// finalDeadline sets the read deadline no frame may move.
func (c *connState) finalDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.final = true
	if err := c.conn.SetReadDeadline(t); err != nil {
		c.conn.Close()
	}
}

// drop counts n drops for reason and logs the sampled ones with kv.
func (s *Server) drop(c *connState, reason string, n int, kv ...any) {
	s.m.dropped.WithLabelValues(reason).Add(float64(n))
	if total, log := c.samples.hit(reason, n); log {
		c.logger.Warnw("Dropped stats", append([]any{"reason", reason, "count", n, "connectionTotal", total}, kv...)...)
	}
}

// endedMidFrame logs a read error inside a frame, counting a frame timeout.
func (s *Server) endedMidFrame(c *connState, err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && s.stopCtx.Err() == nil {
		s.m.dropped.WithLabelValues(ReasonFrameTimeout).Inc()
		c.logger.Warnw("Closed a stat connection that stopped mid-frame", "timeout", s.lim.frameTimeout)
		return
	}
	c.logger.Infow("Stat connection ended mid-frame", zap.Error(err))
}

var errOverBudget = errors.New("statserver: frames being read exceed the server's memory budget")

// budgetReader counts what one frame read against the server's frame memory budget, until release.
type budgetReader struct {
	r    io.Reader
	s    *Server
	held int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.held += int64(n)
		if b.s.frameBytes.Add(int64(n)) > b.s.lim.frameMemory {
			return n, errOverBudget
		}
	}
	return n, err
}

func (b *budgetReader) release() {
	b.s.frameBytes.Add(-b.held)
	b.held = 0
}
