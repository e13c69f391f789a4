//go:build e2e

package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// env is the run's shared state, set by TestMain.
var env struct {
	stack  *stack.Stack
	client *kube.Client
	repo   string
	upErr  error
}

func TestMain(m *testing.M) {
	if os.Getenv("THAW_PERF_LAB") != "1" {
		fmt.Println("perf/lab: skipped: set THAW_PERF_LAB=1 to run the lab benchmarks")
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		fmt.Println("perf/lab: skipped: the lab needs root")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	repo, err := build.FindRepoRoot()
	if err != nil {
		fmt.Println("perf/lab:", err)
		return 1
	}
	env.repo = repo
	cache, err := build.DefaultCacheDir()
	if err != nil {
		fmt.Println("perf/lab:", err)
		return 1
	}
	s := stack.OpenExisting(ctx, stack.Options{Cache: cache, Repo: repo, Out: os.Stdout})
	if s.Lab.Active() {
		fmt.Println("perf/lab: reusing the lab that is running (its images as they are)")
	} else {
		// The ingress daemon is `thaw lab ingress`: build the command (the test binary is not it).
		thaw := filepath.Join(cache, "lab-perf", "thaw")
		cmd := exec.Command("go", "build", "-o", thaw, "./cmd/thaw")
		cmd.Dir, cmd.Stdout, cmd.Stderr = repo, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Println("perf/lab: build thaw:", err)
			return 1
		}
		s, err = stack.Open(ctx, stack.Options{Cache: cache, Repo: repo, Out: os.Stdout, Thaw: thaw, Swap: true})
		if err != nil {
			fmt.Println("perf/lab: tools:", err)
			return 1
		}
		t0 := time.Now()
		env.upErr = s.Up(ctx)
		fmt.Printf("perf/lab: lab up in %s (err: %v)\n", time.Since(t0).Round(10*time.Millisecond), env.upErr)
	}
	env.stack = s
	if env.upErr == nil {
		env.client, env.upErr = s.Lab.Client()
	}
	code := m.Run()
	if os.Getenv("THAW_KEEP_LAB") == "1" {
		fmt.Println("perf/lab: THAW_KEEP_LAB=1: the lab stays up")
		return code
	}
	if err := s.Down(ctx); err != nil {
		fmt.Println("perf/lab: down:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
