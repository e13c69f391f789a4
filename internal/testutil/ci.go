package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// InCI reports whether the tests run under CI (CI set, as every CI service sets it, and not
// "false" or "0"). Under CI every tier must run: what a developer's machine may lack, CI must have.
func InCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "", "false", "0":
		return false
	}
	return true
}

// SkipOutsideCI skips t on a developer's machine that lacks what it needs (root, built tools, the
// module cache); under CI, where every tier must run, it fails instead, so CI cannot pass by skipping.
func SkipOutsideCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("cannot run under CI: "+format, args...)
	}
	t.Skipf(format, args...)
}

// NeedRoot stops a test that needs root when it runs as another user: a skip on a developer's
// machine, a failure under CI.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOutsideCI(t, "needs root (%s)", why)
	}
}

// MainCannotRun is for a TestMain whose whole suite cannot run here: it prints why under the suite's
// name and returns the exit code, 0 (skipped) on a developer's machine and 1 under CI.
func MainCannotRun(suite, why string) int {
	if InCI() {
		fmt.Printf("%s: FAIL: cannot run under CI: %s\n", suite, why)
		return 1
	}
	fmt.Printf("%s: skipped: %s\n", suite, why)
	return 0
}
