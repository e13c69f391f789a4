// Package statforward carries stats between autoscaler replicas, so that a stat reaching any replica
// reaches its bucket's owner, and every Thaw replica keeps the windows of every revision warm.
//
// Each other replica is a peer with one websocket from here, dialled at ws://<ip>:<port> asking for
// the peer subprotocol. A peer that grants it is Thaw's: it receives every stat this replica takes in
// (from activators, or from upstream's forwarders) and every scrape this replica makes as an owner; it
// records them all and decides only for the buckets it owns. A peer that does not grant it is
// upstream's: it receives, as upstream's own forwarder sends them, only the stats of the buckets it
// holds, so a fleet that mixes both during a rolling update loses no stat either way.
//
// Each peer has a bounded queue and one writer goroutine; a peer that is down or slow costs at most its
// queue (oldest dropped first, counted), and the caller — the stat server's receive loop — never blocks.
package statforward

import (
	"context"
	"net"
	"net/http"
	"strconv"
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

// Subprotocol is what Thaw's replicas ask each other for.
const Subprotocol = "thaw-peer.v1"

const (
	// DefaultQueue bounds what waits for one peer: a few seconds of stats of a few thousand revisions.
	DefaultQueue = 8192
	// maxBatch bounds the stats of one frame.
	maxBatch = 512
	// dialTimeout is upstream's establish timeout.
	dialTimeout = 500 * time.Millisecond
	// retryPeriod is upstream's retry period.
	retryPeriod  = 500 * time.Millisecond
	writeTimeout = 2 * time.Second
)

// Drop reasons, the values of the `reason` label of thaw_autoscaler_forward_dropped_total.
const (
	ReasonQueueFull   = "queue_full"
	ReasonWriteFailed = "write_failed"
	ReasonPeerGone    = "peer_gone"
)

// Kinds of peer.
const (
	kindUnknown int32 = iota
	kindThaw
	kindUpstream
)

// Options configures a Forwarder.
type Options struct {
	// SelfIP is this replica's IP; it is never a peer of itself.
	SelfIP string
	// Port is the peers' stat port (8080).
	Port int
	// OwnerIP returns the IP of the replica holding key's bucket, if known (from the Leases).
	OwnerIP func(types.NamespacedName) (string, bool)
	// Queue bounds each peer's queue; 0 is DefaultQueue.
	Queue int
	// Dialer dials peers; nil is a gorilla dialer with upstream's establish timeout.
	Dialer *websocket.Dialer
	// BindSelf dials from SelfIP (the peer admits peers by source address); a pod has that IP.
	BindSelf bool
	Clock    clock.WithTicker
	Logger   *zap.SugaredLogger
}

type msg struct {
	sm     wire.StatMessage
	mirror bool
}

// Forwarder sends stats to the peers. It is safe for concurrent use.
type Forwarder struct {
	opts Options
	ctx  context.Context
	m    *metrics

	mu    sync.Mutex
	peers map[string]*peer
	wg    sync.WaitGroup
}

// New returns a Forwarder whose peer goroutines live until ctx ends or Close.
func New(ctx context.Context, opts Options) *Forwarder {
	if opts.Port == 0 {
		opts.Port = 8080
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Dialer == nil {
		// Dial from this replica's own IP: the peer admits peers by source address.
		nd := &net.Dialer{Timeout: dialTimeout}
		if ip := net.ParseIP(opts.SelfIP); ip != nil && opts.BindSelf {
			nd.LocalAddr = &net.TCPAddr{IP: ip}
		}
		opts.Dialer = &websocket.Dialer{HandshakeTimeout: dialTimeout, NetDialContext: nd.DialContext}
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	if opts.OwnerIP == nil {
		opts.OwnerIP = func(types.NamespacedName) (string, bool) { return "", false }
	}
	return &Forwarder{opts: opts, ctx: ctx, m: newMetrics(), peers: map[string]*peer{}}
}

// SetPeers makes ips the peer set (IPs, or host:port where a peer's port differs): new peers are dialled, peers no longer listed are closed and their
// queues dropped. This replica's own IP is ignored.
func (f *Forwarder) SetPeers(ips []string) {
	want := make(map[string]bool, len(ips))
	for _, ip := range ips {
		if ip != "" && ip != f.opts.SelfIP {
			want[ip] = true
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx.Err() != nil {
		return
	}
	for ip, p := range f.peers {
		if !want[ip] {
			p.stop()
			delete(f.peers, ip)
		}
	}
	for ip := range want {
		if _, ok := f.peers[ip]; ok {
			continue
		}
		p := newPeer(f, ip)
		f.peers[ip] = p
		f.wg.Go(p.run)
	}
	f.m.peers.Set(float64(len(f.peers)))
}

// Peers lists the current peers' IPs and whether each is known to be Thaw's.
func (f *Forwarder) Peers() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]bool, len(f.peers))
	for ip, p := range f.peers {
		out[ip] = p.kind.Load() == kindThaw
	}
	return out
}

// IsPeer reports whether ip is one of the peers (for the stat server's check of who may send as one).
func (f *Forwarder) IsPeer(ip string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.peers[ip]
	return ok
}

// Forward hands a stat this replica took in (from an activator or an upstream forwarder) to every Thaw
// peer and to the key's owner if that is an upstream replica.
func (f *Forwarder) Forward(sm wire.StatMessage) { f.enqueue(msg{sm: sm}) }

// Mirror hands a stat this replica made (a scrape, as the owner) to every Thaw peer.
func (f *Forwarder) Mirror(sm wire.StatMessage) { f.enqueue(msg{sm: sm, mirror: true}) }

func (f *Forwarder) enqueue(m msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.peers {
		p.offer(m)
	}
}

// Close stops every peer and waits for their goroutines.
func (f *Forwarder) Close() {
	f.mu.Lock()
	for ip, p := range f.peers {
		p.stop()
		delete(f.peers, ip)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// peer is one other replica: its queue and its writer goroutine.
type peer struct {
	f      *Forwarder
	ip     string
	url    string
	q      chan msg
	kind   atomic.Int32
	ctx    context.Context
	stop   context.CancelFunc
	logger *zap.SugaredLogger
	// logged samples the log lines per reason: at the 1st, 2nd, 4th... drop.
	drops map[string]*atomic.Uint64
}

func newPeer(f *Forwarder, ip string) *peer {
	ctx, cancel := context.WithCancel(f.ctx)
	hostport := net.JoinHostPort(ip, strconv.Itoa(f.opts.Port))
	if _, _, err := net.SplitHostPort(ip); err == nil {
		hostport = ip // an address with its own port (tests, or a non-default port)
	}
	return &peer{
		f: f, ip: ip, url: "ws://" + hostport + "/",
		q: make(chan msg, f.opts.Queue), ctx: ctx, stop: cancel,
		logger: f.opts.Logger.With("peer", ip),
		drops:  map[string]*atomic.Uint64{ReasonQueueFull: {}, ReasonWriteFailed: {}, ReasonPeerGone: {}},
	}
}

// offer queues m without blocking; when the queue is full the oldest waiting stat makes room.
func (p *peer) offer(m msg) {
	if m.mirror && p.kind.Load() == kindUpstream {
		return // upstream's replicas take only their own buckets' stats, never mirrors
	}
	select {
	case p.q <- m:
		return
	default:
	}
	select {
	case <-p.q:
	default:
	}
	p.drop(ReasonQueueFull, 1)
	select {
	case p.q <- m:
	default:
		p.drop(ReasonQueueFull, 1)
	}
}

func (p *peer) drop(reason string, n int) {
	p.f.m.dropped.WithLabelValues(reason).Add(float64(n))
	c := p.drops[reason]
	if v := c.Add(uint64(n)); v&(v-1) == 0 || v <= uint64(n) {
		p.logger.Warnw("Dropped stats for a peer", "reason", reason, "count", n, "total", v)
	}
}

// run dials the peer and writes its queue until the peer is stopped.
func (p *peer) run() {
	var conn *websocket.Conn
	defer func() {
		if conn != nil {
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			conn.Close()
		}
		if n := len(p.q); n > 0 {
			p.drop(ReasonPeerGone, n)
		}
	}()
	batch := make([]wire.StatMessage, 0, maxBatch)
	var frame []byte
	for p.ctx.Err() == nil {
		if conn == nil {
			c, err := p.dial()
			if err != nil {
				p.logger.Debugw("Peer not reachable; retrying", zap.Error(err))
				if !p.wait(retryPeriod) {
					return
				}
				continue
			}
			conn = c
		}
		var first msg
		select {
		case <-p.ctx.Done():
			return
		case first = <-p.q:
		}
		batch = p.keep(batch[:0], first)
	fill:
		for len(batch) < maxBatch {
			select {
			case m := <-p.q:
				batch = p.keep(batch, m)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			continue
		}
		frame = wire.AppendMessages(frame[:0], batch)
		_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			p.drop(ReasonWriteFailed, len(batch))
			p.logger.Infow("Peer connection broke; redialling", zap.Error(err))
			conn.Close()
			conn = nil
			continue
		}
		p.f.m.sent.WithLabelValues(kindName(p.kind.Load())).Add(float64(len(batch)))
	}
}

// keep appends m to batch if this peer is to have it: a Thaw peer has everything, an upstream one only
// the stats (not mirrors) of the buckets it holds.
func (p *peer) keep(batch []wire.StatMessage, m msg) []wire.StatMessage {
	if p.kind.Load() == kindUpstream {
		if m.mirror {
			return batch
		}
		if ip, ok := p.f.opts.OwnerIP(m.sm.Key); !ok || ip != p.ip {
			return batch
		}
	}
	return append(batch, m.sm)
}

func (p *peer) dial() (*websocket.Conn, error) {
	d := *p.f.opts.Dialer
	d.Subprotocols = []string{Subprotocol}
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	defer cancel()
	conn, _, err := d.DialContext(ctx, p.url, http.Header{})
	if err != nil {
		return nil, err
	}
	kind := kindUpstream
	if conn.Subprotocol() == Subprotocol {
		kind = kindThaw
	}
	if old := p.kind.Swap(kind); old != kind {
		p.logger.Infow("Peer connected", "kind", kindName(kind))
	}
	// The peer never writes to us; reading keeps control frames (ping, close) flowing.
	go func() {
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	return conn, nil
}

// wait sleeps d on the injected clock; false when the peer stopped meanwhile.
func (p *peer) wait(d time.Duration) bool {
	t := p.f.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

func kindName(k int32) string {
	switch k {
	case kindThaw:
		return "thaw"
	case kindUpstream:
		return "upstream"
	}
	return "unknown"
}

type metrics struct {
	sent    *prometheus.CounterVec
	dropped *prometheus.CounterVec
	peers   prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thaw_autoscaler_forward_sent_total",
			Help: "Stats sent to other autoscaler replicas, by the peer's kind (thaw or upstream).",
		}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "thaw_autoscaler_forward_dropped_total",
			Help: "Stats not delivered to another autoscaler replica, by reason.",
		}, []string{"reason"}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "thaw_autoscaler_forward_peers",
			Help: "Other autoscaler replicas this one sends stats to.",
		}),
	}
	for _, r := range []string{ReasonQueueFull, ReasonWriteFailed, ReasonPeerGone} {
		m.dropped.WithLabelValues(r)
	}
	return m
}

// Describe implements prometheus.Collector.
func (f *Forwarder) Describe(ch chan<- *prometheus.Desc) {
	f.m.sent.Describe(ch)
	f.m.dropped.Describe(ch)
	f.m.peers.Describe(ch)
}

// Collect implements prometheus.Collector.
func (f *Forwarder) Collect(ch chan<- prometheus.Metric) {
	f.m.sent.Collect(ch)
	f.m.dropped.Collect(ch)
	f.m.peers.Collect(ch)
}
