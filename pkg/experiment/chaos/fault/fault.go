// Package fault applies chaos faults on a schedule and guarantees that each applied fault is undone:
// after its hold time, and also when the schedule stops early (an error, Ctrl-C, the end of the run).
// The faults themselves (a SIGKILL through the lab's containerd, a pod delete, an iptables cut-off in
// a pod's network namespace) are in lab.go; this file is only the schedule and the bookkeeping.
package fault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"k8s.io/utils/clock"
)

// UndoTimeout bounds one undo; it runs on a context detached from the run's, so a cancelled run still
// heals the cluster.
const UndoTimeout = 30 * time.Second

// Undo puts back what an injection changed.
type Undo func(ctx context.Context) error

// Injector applies one fault. It returns the undo (nil when the fault has nothing to put back, as a
// kill) and a short description of its target for the timeline. An injector that fails half-way must
// still return the undo of what it did.
type Injector interface {
	Inject(ctx context.Context) (target string, undo Undo, err error)
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(ctx context.Context) (string, Undo, error)

// Inject calls f.
func (f InjectorFunc) Inject(ctx context.Context) (string, Undo, error) { return f(ctx) }

// Mark is one event of the fault timeline.
type Mark struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // "inject", "undo" or "error"
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
}

// Schedule repeats a fault.
type Schedule struct {
	Injector Injector
	// Period between injections, each shifted by up to ±Jitter (chaosduck-style: kills do not line up
	// with the components' own periodic work).
	Period, Jitter time.Duration
	// Duration bounds the whole schedule: no injection starts after it.
	Duration time.Duration
	// Hold is how long an injected fault stays before its undo (0: undo at once, for kills that have
	// nothing to undo).
	Hold time.Duration
	// MaxErrors stops the schedule after that many failed injections in a row (default 3).
	MaxErrors int
	// UndoTimeout bounds one undo (default the package's UndoTimeout); a restart that waits for the
	// restarted process to be ready needs more.
	UndoTimeout time.Duration
	Clock       clock.Clock
	Rand        *rand.Rand
	// OnMark receives each mark as it happens (progress lines); may be nil.
	OnMark func(Mark)
}

// Run injects the fault every period until the duration ends or ctx is done, and returns the marks.
// Every injected fault is undone before Run returns, whatever ends it; an undo's error is returned.
func (s Schedule) Run(ctx context.Context) (marks []Mark, err error) {
	if s.Injector == nil || s.Period <= 0 || s.Duration <= 0 {
		return nil, errors.New("fault schedule needs an injector, a period and a duration")
	}
	c := s.Clock
	if c == nil {
		c = clock.RealClock{}
	}
	rnd := s.Rand
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(uint64(c.Now().UnixNano()), 1))
	}
	maxErr := s.MaxErrors
	if maxErr <= 0 {
		maxErr = 3
	}
	mark := func(kind, target, detail string) {
		m := Mark{Time: c.Now(), Kind: kind, Target: target, Detail: detail}
		marks = append(marks, m)
		if s.OnMark != nil {
			s.OnMark(m)
		}
	}
	// pending is the undo of the fault in place, if any; the deferred call runs it on every way out.
	var pending Undo
	var pendingTarget string
	undo := func() {
		if pending == nil {
			return
		}
		u, target := pending, pendingTarget
		pending = nil
		ut := s.UndoTimeout
		if ut <= 0 {
			ut = UndoTimeout
		}
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ut)
		defer cancel()
		if uerr := u(uctx); uerr != nil {
			mark("error", target, "undo: "+uerr.Error())
			err = errors.Join(err, fmt.Errorf("undo %s: %w", target, uerr))
			return
		}
		mark("undo", target, "")
	}
	defer undo()

	end := c.Now().Add(s.Duration)
	failed := 0
	for {
		started := c.Now()
		target, u, ierr := s.Injector.Inject(ctx)
		pending, pendingTarget = u, target
		if ierr != nil {
			mark("error", target, ierr.Error())
			undo()
			if failed++; failed >= maxErr {
				return marks, fmt.Errorf("%d injections in a row failed, last: %w", failed, ierr)
			}
		} else {
			failed = 0
			mark("inject", target, "")
			if s.Hold > 0 {
				if !sleep(ctx, c, min(s.Hold, max(0, end.Sub(c.Now())))) {
					return marks, ctx.Err()
				}
			}
			undo()
		}
		next := s.Period
		if s.Jitter > 0 {
			next += time.Duration(rnd.Int64N(int64(2*s.Jitter))) - s.Jitter
		}
		// The period runs from the injection's start, so a hold does not stretch it.
		next -= c.Since(started)
		if !c.Now().Add(max(next, 0)).Before(end) {
			// Wait out the duration: the fault window is the duration, not the last injection.
			if !sleep(ctx, c, max(0, end.Sub(c.Now()))) {
				return marks, ctx.Err()
			}
			return marks, err
		}
		if !sleep(ctx, c, max(next, 0)) {
			return marks, ctx.Err()
		}
	}
}

// sleep waits d on c; false when ctx ended first.
func sleep(ctx context.Context, c clock.Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
