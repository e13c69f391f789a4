package podharness

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// DelayProxy is a TCP proxy that delays every byte by a one-way latency in each direction, so a
// connection through it behaves like a link with an RTT of twice that (the kernel here has no netem).
// The connect round trip is emulated by holding the first client bytes for one extra RTT. It needs no
// privileges.
type DelayProxy struct {
	ln     net.Listener
	target string
	oneWay time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewDelayProxy listens on listenAddr (for example "127.0.0.1:0") and forwards to target with oneWay
// delay per direction. It is closed in t.Cleanup.
func NewDelayProxy(t testing.TB, listenAddr, target string, oneWay time.Duration) *DelayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		t.Fatalf("delay proxy listen: %v", err)
	}
	return newDelayProxyOn(t, ln, target, oneWay)
}

func newDelayProxyOn(t testing.TB, ln net.Listener, target string, oneWay time.Duration) *DelayProxy {
	p := &DelayProxy{ln: ln, target: target, oneWay: oneWay, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's "ip:port".
func (p *DelayProxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for the proxy's goroutines. It may be
// called more than once.
func (p *DelayProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *DelayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *DelayProxy) handle(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(server, client, 2*p.oneWay) }()
	go func() { defer wg.Done(); p.pipe(client, server, 0) }()
	wg.Wait()
}

type chunk struct {
	data []byte
	due  time.Time
	eof  bool
}

// pipe copies src to dst, delivering each chunk oneWay after it was read; the first chunk also waits
// firstExtra. The queue is bounded: a slow reader backs the writer up as on a real link.
func (p *DelayProxy) pipe(dst, src net.Conn, firstExtra time.Duration) {
	q := make(chan chunk, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range q {
			time.Sleep(time.Until(c.due))
			if c.eof {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				continue
			}
			if _, err := dst.Write(c.data); err != nil {
				dst.Close()
				src.Close()
				// Keep draining q so the reader is never stuck on a full queue.
			}
		}
	}()
	extra := firstExtra
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{data: buf[:n], due: time.Now().Add(p.oneWay + extra)}
			extra = 0
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				q <- chunk{eof: true, due: time.Now().Add(p.oneWay)}
			} else {
				dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}
