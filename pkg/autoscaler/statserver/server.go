// Package statserver is the autoscaler's websocket stat server (port 8080).
//
// Activators (upstream's or Thaw's) and other autoscaler replicas forwarding stats for buckets they do not
// own dial it on any path and send binary frames, each a WireStatMessages (see package wire). Every entry
// with a stat goes to a bounded channel owned by the caller; when the channel is full the connection's
// reader blocks, which pushes back on that socket through TCP instead of buffering without bound.
//
// Compared with upstream's server it keeps the same wire behaviour (any path, binary frames only, entries
// without a stat skipped, kubelet probes answered 200, close code 1012 "Restarting" on shutdown so clients
// reconnect at once, bucket-host ownership check) and adds:
//   - a frame size limit (1 MiB by default). An oversize frame is read through and discarded; unlike
//     gorilla's SetReadLimit, which would close the connection, the connection lives on;
//   - a drop counter by reason, and log lines sampled per connection and reason (1st, 2nd, 4th... drop);
//   - limits on entries per frame, open connections and the time to read a frame once begun (see
//     limits.go), so a hostile client's memory stays bounded;
//   - stats with a Timestamp far from the server's clock, or negative, non-finite or absurd values, are
//     dropped and counted, so one stat cannot freeze a revision's scaling;
//   - Timestamp stamping from an injected clock (upstream does it in main);
//   - a clear 426 for plain HTTP requests, and a send that gives up at shutdown instead of hanging.
package statserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/utils/clock"
	netheader "knative.dev/networking/pkg/http/header"

	"github.com/thaw-dev/thaw/pkg/wire"
)

const (
	// DefaultMaxFrameBytes bounds one frame. A batch from an activator holding many revisions is a few
	// hundred bytes per revision, so 1 MiB leaves room for thousands.
	DefaultMaxFrameBytes = 1 << 20

	// CloseServiceRestart is the websocket close code sent on shutdown (IANA "Service Restart").
	CloseServiceRestart = 1012

	// bucketHostPrefix marks the per-bucket Services other autoscaler replicas forward stats through.
	bucketHostPrefix = "autoscaler-bucket"

	defaultCloseGrace = time.Second
)

// Drop reasons, the values of the `reason` label of thaw_statserver_dropped_total.
const (
	ReasonMalformed = "malformed_frame"
	ReasonText      = "text_frame"
	ReasonNoStat    = "no_stat"
	ReasonOversize  = "oversize_frame"
	// ReasonUnknownPeer counts connections refused for asking to be a peer from an unknown address.
	ReasonUnknownPeer = "unknown_peer"
)

// dropReasons lists every drop reason, for pre-created series.
func dropReasons() []string {
	return append([]string{ReasonMalformed, ReasonText, ReasonNoStat, ReasonOversize, ReasonUnknownPeer}, limitReasons...)
}

// Options tunes a Server. The zero value is upstream's behaviour plus a 1 MiB frame limit.
type Options struct {
	// MaxFrameBytes is the largest frame decoded; bigger ones are dropped. 0 means DefaultMaxFrameBytes.
	MaxFrameBytes int64
	// OwnsBucket, if set, is asked for requests whose Host starts with "autoscaler-bucket": the first
	// label of the host is the bucket name. A bucket this replica does not own is refused (503) without
	// upgrading, so the forwarding replica retries against the new owner. Nil accepts all.
	OwnsBucket func(bucket string) bool
	// Registerer receives the server's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// CloseGrace bounds how long a connection waits for the client's close reply at shutdown (default 1s,
	// and never beyond the Shutdown context).
	CloseGrace time.Duration
	// PeerSubprotocol and PeerOut, when both set, mark Thaw autoscaler peers: a connection that asks for
	// this websocket subprotocol gets it, and its stats go to PeerOut instead of out. Upstream's
	// forwarders and the activators ask for no subprotocol, so they are never taken for peers, and a peer
	// that dials an upstream replica learns from the missing subprotocol that it is not one of its own.
	PeerSubprotocol string
	PeerOut         chan<- wire.StatMessage
	// PeerAllowed, if set, is asked for each connection that asks for the peer subprotocol, with the
	// remote IP: a stranger claiming to be a peer is refused (403) and counted, so that only the
	// replicas behind the autoscaler Service and the bucket holders feed the windows as peers.
	PeerAllowed func(ip string) bool

	// MaxEntriesPerFrame refuses, undecoded, a frame of more entries (0: DefaultMaxEntriesPerFrame).
	MaxEntriesPerFrame int
	// MaxConnections refuses (503, before upgrading) connections beyond it (0: DefaultMaxConnections).
	MaxConnections int
	// FrameTimeout bounds reading one frame from its first byte; the connection is closed when it runs out
	// (0: DefaultFrameTimeout).
	FrameTimeout time.Duration
	// MaxTimestampSkew bounds how far a stat's Timestamp may be from the server's clock, either way (0:
	// DefaultMaxFutureSkew ahead and DefaultMaxAge behind, in seconds).
	MaxTimestampSkew time.Duration
	// MaxStatValue bounds each count and concurrency of a stat (0: DefaultMaxStatValue).
	MaxStatValue float64
	// MaxFrameMemory bounds the bytes of frames read or handled at once over all connections; a
	// connection whose frame would go beyond it is closed (0: DefaultMaxFrameMemory).
	MaxFrameMemory int64
}

// Server receives stats over websockets and sends them to a channel until Shutdown.
type Server struct {
	addr     string
	out      chan<- wire.StatMessage
	opts     Options
	lim      limits
	clk      clock.PassiveClock
	logger   *zap.SugaredLogger
	srv      *http.Server
	upgrader websocket.Upgrader
	m        *metrics

	// stopCtx is cancelled by Shutdown: it unblocks sends and makes each connection say goodbye.
	stopCtx context.Context
	stop    context.CancelFunc

	mu      sync.Mutex
	closing bool
	// goodbyeBy bounds the close handshake of every connection: the earlier of the Shutdown context's
	// deadline and now+CloseGrace. Set once, before stopCtx is cancelled.
	goodbyeBy time.Time
	conns     sync.WaitGroup
	// unknownPeers samples the log line of refused peers.
	unknownPeers atomic.Uint64
	// open counts connections for MaxConnections; refused samples the log line of refusals.
	open    atomic.Int64
	refused atomic.Uint64
	// frameBytes counts the bytes of frames being read or handled, for MaxFrameMemory.
	frameBytes atomic.Int64
}

type metrics struct {
	dropped     *prometheus.CounterVec
	received    prometheus.Counter
	connections prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, logger *zap.SugaredLogger) *metrics {
	m := &metrics{
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thaw_statserver_dropped_total",
			Help: "Stat frames or entries dropped by the stat server, by reason.",
		}, []string{"reason"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "thaw_statserver_received_total",
			Help: "Stat messages received and handed on by the stat server.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "thaw_statserver_connections",
			Help: "Open websocket connections of the stat server.",
		}),
	}
	// Pre-create each reason so dashboards see zeros, not absent series.
	for _, r := range dropReasons() {
		m.dropped.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.dropped, m.received, m.connections} {
			if err := reg.Register(c); err != nil {
				logger.Warnw("Stat server metric not registered", zap.Error(err))
			}
		}
	}
	return m
}

// New makes a Server listening on addr (for ListenAndServe) that sends every received stat to out. The
// caller owns out and must keep reading it until Shutdown returns; its capacity is the server's queue bound.
func New(addr string, out chan<- wire.StatMessage, opts Options, clk clock.PassiveClock, logger *zap.SugaredLogger) *Server {
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if opts.CloseGrace <= 0 {
		opts.CloseGrace = defaultCloseGrace
	}
	logger = logger.Named("statserver").With("address", addr)
	s := &Server{
		addr:   addr,
		out:    out,
		opts:   opts,
		lim:    resolveLimits(opts),
		clk:    clk,
		logger: logger,
		m:      newMetrics(opts.Registerer, logger),
	}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Addr:              addr,
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: time.Minute,
	}
	return s
}

// Handler returns the server's HTTP handler (probes, upgrade, receive loop), for use in another server.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// ListenAndServe listens on the address given to New and serves until Shutdown, when it returns nil.
func (s *Server) ListenAndServe() error {
	l, err := (&net.ListenConfig{KeepAlive: 3 * time.Minute}).Listen(context.Background(), "tcp", s.addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve serves on l until Shutdown, when it returns nil.
func (s *Server) Serve(l net.Listener) error {
	s.logger.Infow("Stat server serving", "listener", l.Addr().String())
	if err := s.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting, sends every open connection a close frame with code 1012 ("Restarting") and
// waits for the connections to end, bounded by ctx. Senders blocked on a full channel give up.
func (s *Server) Shutdown(ctx context.Context) error {
	by := time.Now().Add(s.opts.CloseGrace)
	if d, ok := ctx.Deadline(); ok && d.Before(by) {
		by = d
	}
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		s.goodbyeBy = by
	}
	s.mu.Unlock()
	s.stop()

	err := s.srv.Shutdown(ctx) // listeners and plain HTTP; hijacked websockets are ours to wait for
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// The waiter goroutine ends when the last connection does; each one is already closing.
		return fmt.Errorf("statserver: shutdown: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("statserver: shutdown: %w", err)
	}
	s.logger.Info("Stat server shut down")
	return nil
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if netheader.IsKubeletProbe(r) {
		// Readiness and liveness: once the server serves, it is healthy (as upstream).
		w.WriteHeader(http.StatusOK)
		return
	}
	if s.opts.OwnsBucket != nil && strings.HasPrefix(r.Host, bucketHostPrefix) {
		bkt, _, _ := strings.Cut(r.Host, ".")
		if !s.opts.OwnsBucket(bkt) {
			s.logger.Warnw("Refusing stats for a bucket this replica does not own", "bucket", bkt, "remote", r.RemoteAddr)
			http.Error(w, "stat server: not the owner of bucket "+bkt, http.StatusServiceUnavailable)
			return
		}
	}
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "stat server: expected a websocket upgrade (or a kubelet probe)", http.StatusUpgradeRequired)
		return
	}
	if s.opts.PeerAllowed != nil && s.opts.PeerSubprotocol != "" && slices.Contains(websocket.Subprotocols(r), s.opts.PeerSubprotocol) {
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !s.opts.PeerAllowed(ip) {
			s.m.dropped.WithLabelValues(ReasonUnknownPeer).Inc()
			if n := s.unknownPeers.Add(1); n&(n-1) == 0 {
				s.logger.Warnw("Refused a peer connection from an address that is not an autoscaler replica",
					"remote", r.RemoteAddr, "refused", n)
			}
			http.Error(w, "stat server: not a known autoscaler peer", http.StatusForbidden)
			return
		}
	}

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		http.Error(w, "stat server: shutting down", http.StatusServiceUnavailable)
		return
	}
	s.conns.Add(1)
	s.mu.Unlock()
	defer s.conns.Done()
	if s.open.Add(1) > int64(s.lim.maxConns) {
		s.open.Add(-1)
		s.m.dropped.WithLabelValues(ReasonTooManyConns).Inc()
		if n := s.refused.Add(1); n&(n-1) == 0 {
			s.logger.Warnw("Refused a stat connection: too many open", "remote", r.RemoteAddr, "limit", s.lim.maxConns, "refused", n)
		}
		http.Error(w, "stat server: too many connections", http.StatusServiceUnavailable)
		return
	}
	defer s.open.Add(-1)

	up := s.upgrader
	if s.opts.PeerSubprotocol != "" && s.opts.PeerOut != nil {
		up.Subprotocols = []string{s.opts.PeerSubprotocol}
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has already answered the client with an error status.
		s.logger.Warnw("Websocket upgrade failed", "remote", r.RemoteAddr, zap.Error(err))
		return
	}
	s.m.connections.Inc()
	defer s.m.connections.Dec()
	out := s.out
	if s.opts.PeerSubprotocol != "" && conn.Subprotocol() == s.opts.PeerSubprotocol {
		out = s.opts.PeerOut
	}
	s.receive(conn, r.RemoteAddr, out)
}

// receive runs one connection's read loop until the peer goes away or Shutdown.
func (s *Server) receive(conn *websocket.Conn, remote string, out chan<- wire.StatMessage) {
	logger := s.logger.With("remote", remote)
	logger.Debug("Stat connection open")
	defer conn.Close()
	c := &connState{conn: conn, logger: logger, samples: sampler{}}

	saidGoodbye := make(chan struct{})
	stopGoodbye := context.AfterFunc(s.stopCtx, func() {
		defer close(saidGoodbye)
		s.goodbye(c)
	})
	defer func() {
		// Let a started goodbye finish before the deferred Close, or the 1012 may never leave.
		if !stopGoodbye() {
			<-saidGoodbye
		}
	}()

	var buf bytes.Buffer
	for {
		typ, r, err := conn.NextReader()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway,
				websocket.CloseAbnormalClosure, CloseServiceRestart) || s.stopCtx.Err() != nil {
				logger.Debugw("Stat connection closed", zap.Error(err))
			} else {
				logger.Infow("Stat connection ended", zap.Error(err))
			}
			return
		}
		buf.Reset()
		// The frame has begun: the rest must follow within FrameTimeout, or its buffer would be pinned for
		// as long as the client cares to keep the connection open.
		c.frameDeadline(time.Now().Add(s.lim.frameTimeout))
		// Read at most one byte past the limit: enough to tell an oversize frame without holding it. The
		// bytes held count against the server-wide budget until the frame is handled.
		fr := &budgetReader{r: io.LimitReader(r, s.opts.MaxFrameBytes+1), s: s}
		n, err := buf.ReadFrom(fr)
		if err != nil {
			fr.release()
			if errors.Is(err, errOverBudget) {
				s.drop(c, ReasonMemoryBudget, 1, "budget", s.lim.frameMemory)
				return
			}
			s.endedMidFrame(c, err)
			return
		}
		if n > s.opts.MaxFrameBytes {
			fr.release()
			rest, err := io.Copy(io.Discard, r)
			s.drop(c, ReasonOversize, 1, "bytes", n+rest, "limit", s.opts.MaxFrameBytes)
			if err != nil {
				s.endedMidFrame(c, err)
				return
			}
			c.frameDeadline(time.Time{})
			continue
		}
		c.frameDeadline(time.Time{})
		ok := s.handleFrame(c, typ, buf.Bytes(), out)
		fr.release()
		if !ok {
			return
		}
		if buf.Cap() > 64<<10 {
			// Don't pin a large buffer on a connection between frames: it may stay quiet for hours.
			buf = bytes.Buffer{}
		}
	}
}

// handleFrame decodes one frame and hands its valid stats on; false means Shutdown interrupted the send.
func (s *Server) handleFrame(c *connState, typ int, data []byte, out chan<- wire.StatMessage) bool {
	if typ == websocket.BinaryMessage {
		if n := countEntries(data, s.lim.maxEntries); n > s.lim.maxEntries {
			s.drop(c, ReasonTooManyEntries, 1, "bytes", len(data), "limit", s.lim.maxEntries)
			return true
		}
	}
	now := s.clk.Now().Unix()
	msgs, noStat, drop, err := decodeFrame(typ, data, now)
	if drop != "" {
		s.drop(c, drop, 1, "type", typ, "bytes", len(data), zap.Error(err))
		return true
	}
	if noStat > 0 {
		s.drop(c, ReasonNoStat, noStat)
	}
	for _, sm := range msgs {
		if reason := s.lim.validate(&sm.Stat, now); reason != "" {
			s.drop(c, reason, 1, "key", sm.Key.String(), "timestamp", sm.Stat.Timestamp,
				"concurrency", sm.Stat.AverageConcurrentRequests, "requests", sm.Stat.RequestCount)
			continue
		}
		select {
		case out <- sm:
			s.m.received.Inc()
		case <-s.stopCtx.Done():
			return false
		}
	}
	return true
}

var errTextFrame = errors.New("statserver: text frame (stats are binary WireStatMessages)")

// decodeFrame is the pure part of frame handling: it decodes a frame of websocket type typ into the
// stats to deliver, stamping a zero Timestamp with now (unix seconds). drop is the reason the whole
// frame is dropped, or "" when it is not; noStat counts entries skipped for having no stat.
func decodeFrame(typ int, data []byte, now int64) (msgs []wire.StatMessage, noStat int, drop string, err error) {
	if typ != websocket.BinaryMessage {
		return nil, 0, ReasonText, errTextFrame
	}
	msgs, noStat, err = wire.UnmarshalMessages(data)
	if err != nil {
		return nil, 0, ReasonMalformed, err
	}
	for i := range msgs {
		if msgs[i].Stat.Timestamp == 0 {
			msgs[i].Stat.Timestamp = now
		}
	}
	return msgs, noStat, "", nil
}

// goodbye tells the client to reconnect (to another replica, or to us after the restart) and makes the
// read loop end: at the client's close reply, or after the grace period.
func (s *Server) goodbye(c *connState) {
	s.mu.Lock()
	deadline := s.goodbyeBy
	s.mu.Unlock()
	msg := websocket.FormatCloseMessage(CloseServiceRestart, "Restarting")
	if err := c.conn.WriteControl(websocket.CloseMessage, msg, deadline); err != nil {
		c.logger.Debugw("Could not send close message", zap.Error(err))
		c.conn.Close()
		return
	}
	c.finalDeadline(deadline)
}
