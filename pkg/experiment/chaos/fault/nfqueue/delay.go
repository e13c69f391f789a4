// Package nfqueue adds a fixed delay to packets without netem: an iptables NFQUEUE rule hands the
// packets to a queue, and a Delayer bound to that queue holds each one for the delay, then accepts
// it. Packets leave in the order they came (one queue, one fixed delay), so TCP sees a longer path,
// not reordering. The rule is the caller's (with --queue-bypass, packets flow when no Delayer is
// bound, so a dead process leaves no black hole).
package nfqueue

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// DefaultMaxQueued bounds the packets held at once. A delay of 100 ms on the activator's hop to the
// pods holds a few hundred packets at most; TCP's send buffers bound each connection anyway.
const DefaultMaxQueued = 4096

// maxReadErrors in a row stop the reader: the kernel then accepts what it queues past its length
// (fail-open) until Close.
const maxReadErrors = 100

// Config of a Delayer.
type Config struct {
	// Queue is the NFQUEUE number (--queue-num) in the network namespace.
	Queue uint16
	// Delay is added to each packet.
	Delay time.Duration
	// MaxQueued packets are held at once; a packet past it is accepted at once and counted as an
	// overflow (default DefaultMaxQueued). The kernel's queue is twice as long, with fail-open.
	MaxQueued int
	Clock     clock.Clock
	Log       *slog.Logger
}

// Stats are a Delayer's counts.
type Stats struct {
	// Delayed packets were held for the delay; Overflow ones were accepted at once, the queue full;
	// Flushed ones were accepted early by Close.
	Delayed, Overflow, Flushed uint64
	// Errors are failed reads and verdicts.
	Errors uint64
}

// queue is the kernel side: packets come in by ID and are accepted by ID.
type queue interface {
	receive(fn func(id uint32)) error
	accept(id uint32) error
	close() error
}

type held struct {
	id uint32
	at time.Time
}

// Delayer holds the packets of one queue for a fixed delay.
type Delayer struct {
	cfg Config
	q   queue

	mu     sync.Mutex
	fifo   []held
	closed bool
	wake   chan struct{} // a packet was added
	stop   chan struct{} // Close was called
	// readDone and releaseDone are closed when each loop has returned.
	readDone, releaseDone chan struct{}

	// verdicts are sent by the releaser and, for overflows, by the reader.
	vmu                                 sync.Mutex
	delayed, overflow, flushed, errored atomic.Uint64
}

// Open binds queue cfg.Queue in the network namespace at nsPath (as /proc/PID/ns/net; "" for the
// caller's) and starts delaying its packets.
func Open(nsPath string, cfg Config) (*Delayer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := dial(nsPath, cfg.Queue, uint32(2*cfg.MaxQueued))
	if err != nil {
		return nil, err
	}
	return start(c, cfg), nil
}

func (c Config) withDefaults() (Config, error) {
	if c.Delay <= 0 || c.Delay > time.Minute {
		return c, fmt.Errorf("nfqueue: delay %v, want more than 0 and at most 1m", c.Delay)
	}
	if c.MaxQueued < 0 {
		return c, fmt.Errorf("nfqueue: max queued %d", c.MaxQueued)
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = DefaultMaxQueued
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c, nil
}

func start(q queue, cfg Config) *Delayer {
	d := &Delayer{cfg: cfg, q: q, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		readDone: make(chan struct{}), releaseDone: make(chan struct{})}
	go d.read()
	go d.release()
	return d
}

// read takes the kernel's packets into the FIFO, or accepts them at once when it is full.
func (d *Delayer) read() {
	defer close(d.readDone)
	failed := 0
	for {
		err := d.q.receive(d.add)
		if d.isClosed() {
			return
		}
		if err == nil {
			failed = 0
			continue
		}
		d.errored.Add(1)
		if failed++; failed >= maxReadErrors {
			d.cfg.Log.Error("nfqueue: reading the queue keeps failing; packets past the kernel's queue length pass undelayed", "queue", d.cfg.Queue, "err", err)
			return
		}
	}
}

func (d *Delayer) add(id uint32) {
	d.mu.Lock()
	if d.closed {
		// Close is under way: the packet goes at once, like the held ones.
		d.mu.Unlock()
		d.flushed.Add(1)
		d.accept(id)
		return
	}
	if len(d.fifo) >= d.cfg.MaxQueued {
		d.mu.Unlock()
		d.overflow.Add(1)
		d.accept(id)
		return
	}
	d.fifo = append(d.fifo, held{id: id, at: d.cfg.Clock.Now()})
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// release accepts each packet once it has been held the delay; on Close, every held one at once.
func (d *Delayer) release() {
	defer close(d.releaseDone)
	for {
		d.mu.Lock()
		if len(d.fifo) == 0 {
			d.mu.Unlock()
			select {
			case <-d.wake:
				continue
			case <-d.stop:
				d.flush()
				return
			}
		}
		head := d.fifo[0]
		d.mu.Unlock()
		if wait := head.at.Add(d.cfg.Delay).Sub(d.cfg.Clock.Now()); wait > 0 {
			t := d.cfg.Clock.NewTimer(wait)
			select {
			case <-t.C():
			case <-d.stop:
				t.Stop()
				d.flush()
				return
			}
		}
		d.mu.Lock()
		d.fifo = d.fifo[1:]
		d.mu.Unlock()
		d.delayed.Add(1)
		d.accept(head.id)
	}
}

// flush accepts every held packet: a closed queue would drop them.
func (d *Delayer) flush() {
	d.mu.Lock()
	rest := d.fifo
	d.fifo = nil
	d.mu.Unlock()
	for _, h := range rest {
		d.flushed.Add(1)
		d.accept(h.id)
	}
}

func (d *Delayer) accept(id uint32) {
	d.vmu.Lock()
	err := d.q.accept(id)
	d.vmu.Unlock()
	if err != nil {
		d.errored.Add(1)
	}
}

func (d *Delayer) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Close accepts every held packet at once, unbinds the queue and waits for both loops. Delete the
// NFQUEUE rule first: packets queued after Close pass undelayed (--queue-bypass) or, without it, are
// dropped. Safe to call twice.
func (d *Delayer) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	close(d.stop)
	// The releaser flushes before the socket closes, so the flush's verdicts reach the kernel
	// (closing a queue with packets in it drops them).
	<-d.releaseDone
	// Under the verdict lock: a packet the reader took while Close ran gets its verdict before the
	// queue closes, not after.
	d.vmu.Lock()
	err := d.q.close()
	d.vmu.Unlock()
	<-d.readDone
	return err
}

// held is the number of packets in the FIFO.
func (d *Delayer) held() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.fifo)
}

// Stats returns the counts so far.
func (d *Delayer) Stats() Stats {
	return Stats{Delayed: d.delayed.Load(), Overflow: d.overflow.Load(), Flushed: d.flushed.Load(), Errors: d.errored.Load()}
}

// String is a one-line summary for the fault's timeline.
func (s Stats) String() string {
	return fmt.Sprintf("%d delayed, %d overflowed, %d flushed, %d errors", s.Delayed, s.Overflow, s.Flushed, s.Errors)
}
