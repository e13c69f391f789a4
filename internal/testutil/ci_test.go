package testutil

import "testing"

func TestInCI(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want bool
	}{{"", false}, {"false", false}, {"FALSE", false}, {"0", false}, {"true", true}, {"1", true}, {"yes", true}} {
		t.Setenv("CI", tc.env)
		if got := InCI(); got != tc.want {
			t.Errorf("CI=%q: InCI() = %v, want %v", tc.env, got, tc.want)
		}
	}
}

func TestSkipOutsideCI(t *testing.T) {
	for _, tc := range []struct {
		env      string
		wantFail bool
	}{{"", false}, {"true", true}} {
		t.Run("CI="+tc.env, func(t *testing.T) {
			t.Setenv("CI", tc.env)
			r := &skipRecorder{recorder: recorder{TB: t}}
			func() {
				defer func() {
					if p := recover(); p != nil && p != &r.recorder && p != r {
						panic(p)
					}
				}()
				SkipOutsideCI(r, "no %s", "tool")
			}()
			if failed := r.fatal != ""; failed != tc.wantFail {
				t.Fatalf("failed = %v (%q), skipped = %v; want failed %v", failed, r.fatal, r.skipped, tc.wantFail)
			}
			if r.skipped == tc.wantFail {
				t.Fatalf("skipped = %v, want %v", r.skipped, !tc.wantFail)
			}
			if tc.wantFail && r.fatal != "cannot run under CI: no tool" {
				t.Fatalf("message %q", r.fatal)
			}
		})
	}
}

// skipRecorder also records a skip, ending the caller as Skipf does.
type skipRecorder struct {
	recorder
	skipped bool
}

func (r *skipRecorder) Skipf(string, ...any) {
	r.skipped = true
	panic(r)
}

func TestMainCannotRun(t *testing.T) {
	t.Setenv("CI", "")
	if code := MainCannotRun("suite", "needs root"); code != 0 {
		t.Fatalf("outside CI: exit %d, want 0", code)
	}
	t.Setenv("CI", "true")
	if code := MainCannotRun("suite", "needs root"); code != 1 {
		t.Fatalf("under CI: exit %d, want 1", code)
	}
}
