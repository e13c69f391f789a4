package testutil

import (
	"testing"
	"time"
)

// FakeClock is the part of k8s.io/utils/clock/testing's FakeClock that the
// stepping helpers drive.
type FakeClock interface {
	HasWaiters() bool
	Step(time.Duration)
}

// StepWhenWaiting advances clk by d once the code under test waits on it (a
// timer, ticker or After exists), so the step cannot land before the wait and
// be lost. It fails t when nothing waits within Timeout.
func StepWhenWaiting(t testing.TB, clk FakeClock, d time.Duration) {
	t.Helper()
	stepWhenWaiting(t, Timeout, clk, d)
}

func stepWhenWaiting(t testing.TB, timeout time.Duration, clk FakeClock, d time.Duration) {
	t.Helper()
	eventuallyWithin(t, timeout, "something to wait on the fake clock", clk.HasWaiters)
	clk.Step(d)
}

// StepUntil advances clk by d each time the code under test waits on it, until
// done holds, for code that waits on the clock an unknown number of times. It
// fails t when done does not hold within Timeout of real time. Call it from
// the test's goroutine.
func StepUntil(t testing.TB, clk FakeClock, d time.Duration, done func() bool) {
	t.Helper()
	stepUntil(t, Timeout, clk, d, done)
}

func stepUntil(t testing.TB, timeout time.Duration, clk FakeClock, d time.Duration, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v stepping the fake clock by %v", timeout, d)
		}
		if clk.HasWaiters() {
			clk.Step(d)
		}
		// Real time, for the driver only: let the code under test run to its next wait (a ticker
		// stays a waiter, so stepping without a pause would race far ahead of it).
		time.Sleep(time.Millisecond)
	}
}

// Closed reports, without blocking, whether ch is closed: a done condition
// for StepUntil from a channel the code under test closes when it returns.
func Closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}
