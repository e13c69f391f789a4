// Package labtest is the bring-up shared by the lab test tiers that may reuse a running lab: open the
// lab that is up, or build the thaw command (the ingress daemon is `thaw lab ingress`, and a test
// binary is not it) and bring a new one up; at the end, leave it up only when asked to.
package labtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// KeepEnv names the environment variable that keeps the lab up after a tier (value "1").
const KeepEnv = "THAW_KEEP_LAB"

// Options configure Open.
type Options struct {
	// Tier names the caller in log lines and in the cache directory of its thaw binary.
	Tier string
	// Out receives the bring-up's progress; nil discards it.
	Out io.Writer
	// Autoscaler overrides config-autoscaler keys of a new lab (a reused lab keeps its own).
	Autoscaler map[string]string
}

// Lab is an open lab and how it came to be.
type Lab struct {
	Stack  *stack.Stack
	Repo   string
	Cache  string
	Reused bool          // it was running before Open
	UpTime time.Duration // time of `up` when it was not reused
}

// Open reuses the lab that is running or brings one up with upstream's components. The returned Lab
// is non-nil whenever the tools resolved, so that Close can tear down a half-started lab.
func Open(ctx context.Context, o Options) (*Lab, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	repo, err := build.FindRepoRoot()
	if err != nil {
		return nil, err
	}
	cache, err := build.DefaultCacheDir()
	if err != nil {
		return nil, err
	}
	l := &Lab{Repo: repo, Cache: cache}
	s := stack.OpenExisting(ctx, stack.Options{Cache: cache, Repo: repo, Out: o.Out})
	if s.Lab.Active() {
		fmt.Fprintf(o.Out, "%s: reusing the lab that is running (its images as they are)\n", o.Tier)
		l.Stack, l.Reused = s, true
		return l, nil
	}
	thaw := filepath.Join(cache, "lab-"+o.Tier, "thaw")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", thaw, "./cmd/thaw")
	cmd.Dir, cmd.Stdout, cmd.Stderr = repo, o.Out, o.Out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build thaw: %w", err)
	}
	s, err = stack.Open(ctx, stack.Options{Cache: cache, Repo: repo, Out: o.Out, Thaw: thaw, Autoscaler: o.Autoscaler})
	if err != nil {
		return nil, fmt.Errorf("tools: %w", err)
	}
	l.Stack = s
	t0 := time.Now()
	err = s.Up(ctx)
	l.UpTime = time.Since(t0)
	if err != nil {
		return l, fmt.Errorf("lab up failed after %s: %w", l.UpTime.Round(10*time.Millisecond), err)
	}
	fmt.Fprintf(o.Out, "%s: lab up in %s\n", o.Tier, l.UpTime.Round(10*time.Millisecond))
	return l, nil
}

// Keep reports whether the environment asks to leave the lab up.
func Keep() bool { return os.Getenv(KeepEnv) == "1" }

// Close tears the lab down unless Keep says otherwise.
func (l *Lab) Close(ctx context.Context, out io.Writer, tier string) error {
	if l == nil || l.Stack == nil {
		return nil
	}
	if Keep() {
		fmt.Fprintf(out, "%s: %s=1: the lab stays up\n", tier, KeepEnv)
		return nil
	}
	return l.Stack.Down(ctx)
}
