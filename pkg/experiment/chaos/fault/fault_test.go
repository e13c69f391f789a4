package fault

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
)

// fakeFault counts injections and undos; failAt makes the n-th injection (1-based) fail half-way,
// after it changed something, so its undo must still run.
type fakeFault struct {
	mu               sync.Mutex
	injected, undone int
	failAt           int
	undoErr          error
	// onInject runs after each injection (cancels the run in a test).
	onInject func(n int)
}

func (f *fakeFault) Inject(ctx context.Context) (string, Undo, error) {
	f.mu.Lock()
	f.injected++
	n := f.injected
	f.mu.Unlock()
	undo := func(ctx context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if ctx.Err() != nil {
			return errors.New("undo ran on a cancelled context")
		}
		f.undone++
		return f.undoErr
	}
	if f.onInject != nil {
		f.onInject(n)
	}
	if n == f.failAt {
		return "fake", undo, errors.New("half-done")
	}
	return "fake", undo, nil
}

func (f *fakeFault) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected, f.undone
}

// drive runs f on its own goroutine and steps the fake clock by step whenever f waits on it, until f
// returns (or fails t after testutil.Timeout).
func drive(t *testing.T, c *clocktesting.FakeClock, step time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	testutil.StepUntil(t, c, step, testutil.Closed(done))
}

func TestScheduleAlwaysUndoes(t *testing.T) {
	for _, tc := range []struct {
		name string
		// failAt: which injection fails; cancelAt: cancel the run right after that injection.
		failAt, cancelAt, maxErrors int
		hold                        time.Duration
		undoErr                     error
		wantErr                     bool
		wantInjected                int
	}{
		{name: "every hold ends in an undo", hold: 5 * time.Second, wantInjected: 6},
		{name: "kills have nothing to undo but the schedule still calls it", wantInjected: 6},
		{name: "a failed injection is undone and the schedule goes on", failAt: 2, hold: 5 * time.Second, wantInjected: 6},
		{name: "repeated failures stop the run, undone", failAt: 1, maxErrors: 1, hold: 5 * time.Second, wantErr: true, wantInjected: 1},
		{name: "cancel during a hold undoes on a live context", cancelAt: 3, hold: 5 * time.Second, wantErr: true, wantInjected: 3},
		{name: "cancel between kills", cancelAt: 2, wantErr: true, wantInjected: 2},
		{name: "an undo error is reported", hold: time.Second, undoErr: errors.New("rule gone"), wantErr: true, wantInjected: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clocktesting.NewFakeClock(time.Unix(1e9, 0))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := &fakeFault{failAt: tc.failAt, undoErr: tc.undoErr}
			if tc.cancelAt > 0 {
				f.onInject = func(n int) {
					if n == tc.cancelAt {
						cancel()
					}
				}
			}
			s := Schedule{Injector: f, Period: 20 * time.Second, Duration: 2 * time.Minute, Hold: tc.hold,
				MaxErrors: tc.maxErrors, Clock: c, Rand: rand.New(rand.NewPCG(1, 2))}
			var marks []Mark
			var err error
			drive(t, c, time.Second, func() { marks, err = s.Run(ctx) })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			injected, undone := f.counts()
			if injected != tc.wantInjected {
				t.Errorf("injected %d times, want %d", injected, tc.wantInjected)
			}
			if tc.undoErr == nil && undone != injected {
				t.Errorf("%d injections but %d undos", injected, undone)
			}
			if len(marks) == 0 {
				t.Errorf("no marks")
			}
		})
	}
}

func TestScheduleIsBoundedByDuration(t *testing.T) {
	c := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	f := &fakeFault{}
	s := Schedule{Injector: f, Period: 20 * time.Second, Jitter: 5 * time.Second, Duration: 5 * time.Minute,
		Clock: c, Rand: rand.New(rand.NewPCG(3, 4))}
	start := c.Now()
	var marks []Mark
	var err error
	drive(t, c, time.Second, func() { marks, err = s.Run(context.Background()) })
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Since(start); got < 5*time.Minute || got > 5*time.Minute+2*time.Second {
		t.Errorf("schedule lasted %s, want the 5m duration", got)
	}
	for _, m := range marks {
		if m.Kind == "inject" && m.Time.Sub(start) >= 5*time.Minute {
			t.Errorf("injection at %s, after the duration", m.Time.Sub(start))
		}
	}
	if n, _ := f.counts(); n < 12 || n > 20 {
		t.Errorf("%d injections in 5m every 20s±5s", n)
	}
}

func TestScheduleValidates(t *testing.T) {
	if _, err := (Schedule{}).Run(context.Background()); err == nil {
		t.Fatal("no error for an empty schedule")
	}
}
