// Package testutil holds the few helpers that tests across packages share.
package testutil

import (
	"os"
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

// SkipOutsideCI skips t on a developer's machine that lacks what it needs (built tools, the module
// cache); under CI, where every tier must run, it fails instead.
func SkipOutsideCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("cannot run under CI: "+format, args...)
	}
	t.Skipf(format, args...)
}
