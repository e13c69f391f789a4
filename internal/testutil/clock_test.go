package testutil

import (
	"fmt"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// recorder is a testing.TB whose Fatalf ends only the calling goroutine, so a
// test can check that a helper fails.
type recorder struct {
	testing.TB
	mu    sync.Mutex
	fatal string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatal = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	panic(r)
}

// failure runs f with a recorder and returns its Fatalf message ("" if none).
func failure(t *testing.T, f func(tb testing.TB)) string {
	t.Helper()
	r := &recorder{TB: t}
	func() {
		defer func() {
			if p := recover(); p != nil && p != r {
				panic(p)
			}
		}()
		f(r)
	}()
	return r.fatal
}

// A lone step before the code waits would be lost: the helper steps only
// once the timer exists, and the timer then fires.
func TestStepWhenWaitingStepsAfterTheWait(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	fired := make(chan time.Time, 1)
	go func() { fired <- <-clk.After(time.Second) }()
	StepWhenWaiting(t, clk, time.Second)
	select {
	case at := <-fired:
		if want := time.Unix(1, 0); !at.Equal(want) {
			t.Fatalf("timer fired at %v, want %v", at, want)
		}
	case <-time.After(Timeout):
		t.Fatal("the timer did not fire")
	}
}

func TestStepUntilDrivesRepeatedWaits(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			<-clk.After(time.Second)
		}
	}()
	StepUntil(t, clk, time.Second, Closed(done))
	if got := clk.Since(time.Unix(0, 0)); got != 5*time.Second {
		t.Fatalf("clock advanced %v, want 5s (one step per wait)", got)
	}
}

// idle never has waiters: both helpers must fail rather than hang or step.
type idle struct{ steps int }

func (c *idle) HasWaiters() bool   { return false }
func (c *idle) Step(time.Duration) { c.steps++ }

func TestHelpersFailWhenNothingWaits(t *testing.T) {
	for name, f := range map[string]func(tb testing.TB, c *idle){
		"StepWhenWaiting": func(tb testing.TB, c *idle) { stepWhenWaiting(tb, 50*time.Millisecond, c, time.Second) },
		"StepUntil": func(tb testing.TB, c *idle) {
			stepUntil(tb, 50*time.Millisecond, c, time.Second, func() bool { return false })
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := &idle{}
			msg := failure(t, func(tb testing.TB) { f(tb, c) })
			if msg == "" {
				t.Fatal("no failure")
			}
			if c.steps != 0 {
				t.Fatalf("stepped %d times with nothing waiting", c.steps)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	ch := make(chan struct{})
	closed := Closed(ch)
	if closed() {
		t.Fatal("open channel reported closed")
	}
	close(ch)
	if !closed() {
		t.Fatal("closed channel reported open")
	}
}
