// Package statsink sends the activator's stats to the autoscaler over one
// websocket (binary WireStatMessages), reconnecting with capped exponential
// backoff. Periodic batches made while disconnected are dropped (the next
// second brings a fresher one); pokes are kept, one per revision and
// bounded, and sent first on reconnect, because a lost poke is a cold start
// that waits for the next tick.
package statsink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// URL returns upstream's autoscaler stat endpoint for a system namespace and
// cluster domain.
func URL(systemNamespace, clusterDomain string) string {
	return fmt.Sprintf("ws://autoscaler.%s.svc.%s:8080", systemNamespace, clusterDomain)
}

// Options tune a Sink; zero values take the defaults.
type Options struct {
	// QueueSize bounds periodic batches waiting to be written (default 16).
	QueueSize int
	// MaxPokes bounds revisions with a pending poke (default 4096).
	MaxPokes int
	// PokeTTL drops pokes that waited longer while disconnected (default 30s):
	// by then the request is long gone or the periodic reports carry it.
	PokeTTL time.Duration
	// InitialBackoff and MaxBackoff shape reconnect waits (100ms ×2 up to 5s).
	InitialBackoff, MaxBackoff time.Duration
	// PingInterval and PongTimeout keep the connection checked (3s, 10s).
	PingInterval, PongTimeout time.Duration
	// HandshakeTimeout bounds the websocket dial (3s, as upstream).
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one write (5s).
	WriteTimeout time.Duration
	// Registerer receives the connection metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// OnPokeSent, if set, is called for each poke as the frame carrying it
	// is written to the socket, just before the write (cold-start timing).
	// It runs on the sender goroutine and must not block.
	OnPokeSent func(rev types.NamespacedName, at time.Time)
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 16
	}
	if o.MaxPokes <= 0 {
		o.MaxPokes = 4096
	}
	def(&o.PokeTTL, 30*time.Second)
	def(&o.InitialBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 5*time.Second)
	def(&o.PingInterval, 3*time.Second)
	def(&o.PongTimeout, 10*time.Second)
	def(&o.HandshakeTimeout, 3*time.Second)
	def(&o.WriteTimeout, 5*time.Second)
}

type pendingPoke struct {
	msg wire.StatMessage
	at  time.Time
}

// Sink is the stat client. Poke, Report and Connected are safe for
// concurrent use and never block; Run owns the connection.
type Sink struct {
	url    string
	opts   Options
	clk    clock.WithTicker
	logger *zap.SugaredLogger

	connected atomic.Bool
	batches   chan []wire.StatMessage
	wake      chan struct{}

	mu    sync.Mutex
	pokes map[types.NamespacedName]pendingPoke

	reachable  prometheus.Gauge
	connErrors prometheus.Counter
	dropped    *prometheus.CounterVec
}

// New returns a Sink for url; call Run to connect.
func New(url string, opts Options, clk clock.WithTicker, logger *zap.SugaredLogger) *Sink {
	opts.defaults()
	peer := prometheus.Labels{"peer": "autoscaler"}
	s := &Sink{
		url:     url,
		opts:    opts,
		clk:     clk,
		logger:  logger.Named("statsink").With("url", url),
		batches: make(chan []wire.StatMessage, opts.QueueSize),
		wake:    make(chan struct{}, 1),
		pokes:   map[types.NamespacedName]pendingPoke{},
		reachable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kn_activator_stats_conn_reachable", ConstLabels: peer,
			Help: "Whether a peer is reachable from the activator (1 = reachable, 0 = not reachable)",
		}),
		connErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kn_activator_stats_conn_errors_total", ConstLabels: peer,
			Help: "Number of connection errors from the activator",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thaw_activator_stats_dropped_total",
			Help: "Stat messages not sent to the autoscaler, by reason",
		}, []string{"reason"}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.reachable, s.connErrors, s.dropped)
	}
	return s
}

// Connected reports whether the websocket is up.
func (s *Sink) Connected() bool { return s.connected.Load() }

// Poke queues a first-request stat; the newest per revision wins.
func (s *Sink) Poke(m wire.StatMessage) {
	now := s.clk.Now()
	s.mu.Lock()
	_, have := s.pokes[m.Key]
	if !have && len(s.pokes) >= s.opts.MaxPokes {
		s.mu.Unlock()
		s.dropped.WithLabelValues("poke_buffer_full").Inc()
		return
	}
	s.pokes[m.Key] = pendingPoke{msg: m, at: now}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Report queues a periodic batch, or drops it when disconnected or behind.
func (s *Sink) Report(msgs []wire.StatMessage) {
	if !s.connected.Load() {
		s.dropped.WithLabelValues("disconnected").Add(float64(len(msgs)))
		return
	}
	select {
	case s.batches <- msgs:
	default:
		s.dropped.WithLabelValues("queue_full").Add(float64(len(msgs)))
	}
}

// takePokes returns the pending pokes younger than PokeTTL and clears them.
func (s *Sink) takePokes() []wire.StatMessage {
	now := s.clk.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pokes) == 0 {
		return nil
	}
	msgs := make([]wire.StatMessage, 0, len(s.pokes))
	for k, p := range s.pokes {
		if now.Sub(p.at) <= s.opts.PokeTTL {
			msgs = append(msgs, p.msg)
		} else {
			s.dropped.WithLabelValues("poke_expired").Inc()
		}
		delete(s.pokes, k)
	}
	return msgs
}

// requeuePokes puts back pokes whose write failed (unless newer ones came).
func (s *Sink) requeuePokes(msgs []wire.StatMessage) {
	now := s.clk.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if _, have := s.pokes[m.Key]; !have && len(s.pokes) < s.opts.MaxPokes {
			s.pokes[m.Key] = pendingPoke{msg: m, at: now}
		}
	}
}

// Run connects and sends until ctx ends.
func (s *Sink) Run(ctx context.Context) {
	backoff := s.opts.InitialBackoff
	everConnected, failing := false, false
	for ctx.Err() == nil {
		conn, err := s.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.connErrors.Inc()
			if !failing {
				// One line per outage, not per retry.
				s.logger.Warnw("Autoscaler not reachable; retrying in the background", zap.Error(err))
				failing = true
			}
			if !s.sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, s.opts.MaxBackoff)
			continue
		}
		failing, backoff = false, s.opts.InitialBackoff
		if everConnected {
			s.logger.Info("Autoscaler connection re-established")
		} else {
			s.logger.Info("Autoscaler connection established")
		}
		everConnected = true
		// The gauge moves before the flag, so whoever sees the flag sees it.
		s.reachable.Set(1)
		s.connected.Store(true)
		err = s.serve(ctx, conn)
		s.reachable.Set(0)
		s.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		s.connErrors.Inc()
		s.logger.Warnw("Autoscaler connection lost; reconnecting", zap.Error(err))
		failing = true
		// Batches queued for the dead connection are stale by the time a new
		// one is up.
		s.drainBatches()
	}
}

func (s *Sink) drainBatches() {
	for {
		select {
		case b := <-s.batches:
			s.dropped.WithLabelValues("disconnected").Add(float64(len(b)))
		default:
			return
		}
	}
}

func (s *Sink) sleep(ctx context.Context, d time.Duration) bool {
	t := s.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

func (s *Sink) dial(ctx context.Context) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: s.opts.HandshakeTimeout}
	conn, resp, err := d.DialContext(ctx, s.url, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (status %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	return conn, nil
}

// serve owns conn: it writes pokes and batches, pings, and watches the
// reader. It returns when the connection fails or ctx ends.
func (s *Sink) serve(ctx context.Context, conn *websocket.Conn) error {
	readErr := make(chan error, 1)
	conn.SetReadDeadline(time.Now().Add(s.opts.PongTimeout))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(s.opts.PongTimeout))
	})
	go func() {
		// Reading processes pongs and the server's close frame.
		for {
			if _, _, err := conn.NextReader(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	defer func() {
		conn.Close()
		<-readErr // the reader ends once the connection is closed
	}()

	ping := s.clk.NewTicker(s.opts.PingInterval)
	defer ping.Stop()
	// Pokes made while disconnected go out first.
	if err := s.sendPokes(conn); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return ctx.Err()
		case err := <-readErr:
			readErr <- err // for the deferred wait
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("closed by the autoscaler: %w", err)
			}
			return err
		case <-s.wake:
			if err := s.sendPokes(conn); err != nil {
				return err
			}
		case b := <-s.batches:
			if err := s.write(conn, b); err != nil {
				s.dropped.WithLabelValues("write_error").Add(float64(len(b)))
				return err
			}
		case <-ping.C():
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.opts.WriteTimeout)); err != nil {
				return err
			}
		}
	}
}

func (s *Sink) sendPokes(conn *websocket.Conn) error {
	msgs := s.takePokes()
	if len(msgs) == 0 {
		return nil
	}
	// Reported as the frame goes out, not after: on loopback the autoscaler can act on the poke, and
	// the pod answer, before this goroutine runs again, and a cold start that ended before its poke
	// was reported would lack that phase. A failed write re-sends the pokes; the cold start keeps
	// this first attempt's time.
	if s.opts.OnPokeSent != nil {
		at := s.clk.Now()
		for _, m := range msgs {
			s.opts.OnPokeSent(m.Key, at)
		}
	}
	if err := s.write(conn, msgs); err != nil {
		s.requeuePokes(msgs)
		return err
	}
	return nil
}

func (s *Sink) write(conn *websocket.Conn, msgs []wire.StatMessage) error {
	conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	return conn.WriteMessage(websocket.BinaryMessage, wire.MarshalMessages(msgs))
}

// Status returns nil when connected, for diagnostics (not readiness).
func (s *Sink) Status() error {
	if s.Connected() {
		return nil
	}
	return errors.New("autoscaler connection not established")
}
