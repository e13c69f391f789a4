// Package testutil holds the few helpers that tests across packages share.
package testutil

import (
	"testing"
	"time"
)

// Timeout bounds every Eventually: far above what a condition needs on a
// loaded two-core machine, so a timeout means the behaviour is wrong.
const Timeout = 10 * time.Second

// Eventually polls cond every millisecond until it holds, and fails t naming
// what it waited for once Timeout has passed. It is for conditions reached
// by other goroutines or processes; time-driven behaviour uses a fake clock.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, Timeout, what, cond)
}

func eventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}
