//go:build e2e

// Package e2e runs the lab suite: the real single-node cluster with Knative Serving, first with
// upstream's components. It needs root and runs with
//
//	go test -tags e2e ./test/e2e/ -v -timeout 30m
//
// TestMain brings the lab up once; the last test tears it down and compares the host with its state
// before `up`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// lab is the suite's shared state, set by TestMain.
var lab struct {
	stack   *stack.Stack
	client  *kube.Client
	before  host.Snapshot
	upTime  time.Duration
	upErr   error
	down    bool
	repo    string
	workDir string
}

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(testutil.MainCannotRun("e2e", "the lab needs root"))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	repo, err := build.FindRepoRoot()
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	lab.repo = repo
	cache, err := build.DefaultCacheDir()
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	// The host comparison needs the state before any lab: tear down one left behind, refuse one in use.
	if old := stack.OpenExisting(ctx, stack.Options{Cache: cache, Repo: repo}); old.Lab.Active() {
		if !old.Lab.Stale() {
			// Its daemons run: someone is using it. The suite tears down only a lab left behind.
			fmt.Println("e2e: a lab is up and running (someone else's run?): stop it with `thaw lab down` first")
			return 1
		}
		fmt.Println("e2e: tearing down the lab left behind")
		if err := old.Down(ctx); err != nil {
			fmt.Println("e2e: teardown of the old lab:", err)
		}
	}
	lab.before = host.Take(ctx)
	// The ingress daemon is `thaw lab ingress`: build the command (the test binary is not it).
	thaw := filepath.Join(cache, "lab-e2e", "thaw")
	cmd := exec.Command("go", "build", "-o", thaw, "./cmd/thaw")
	cmd.Dir, cmd.Stdout, cmd.Stderr = repo, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("e2e: build thaw:", err)
		return 1
	}
	s, err := stack.Open(ctx, stack.Options{Cache: cache, Repo: repo, Out: os.Stdout, Thaw: thaw,
		// Fast scale to zero for the suite (6 s is the minimum upstream accepts).
		Autoscaler: map[string]string{"scale-to-zero-grace-period": "6s"},
		// The whole suite can run with another cluster domain (make test-e2e-domain runs one test so).
		ClusterDomain: os.Getenv("THAW_E2E_CLUSTER_DOMAIN")})
	if err != nil {
		fmt.Println("e2e: tools:", err)
		return 1
	}
	lab.stack = s
	t0 := time.Now()
	lab.upErr = s.Up(ctx)
	lab.upTime = time.Since(t0)
	if lab.upErr == nil {
		lab.client, lab.upErr = s.Lab.Client()
	}
	if lab.upErr != nil {
		fmt.Printf("e2e: lab up failed after %s: %v\n%s\n", lab.upTime, lab.upErr, s.Diagnostics(ctx, "kube-system", "knative-serving"))
	} else {
		fmt.Printf("e2e: lab up in %s\n", lab.upTime.Round(10*time.Millisecond))
	}
	code := m.Run()
	if !lab.down {
		// Some test filter skipped the teardown test, or it did not run: never leave the lab behind.
		_ = s.Down(ctx)
	}
	return code
}

// needLab stops a test early when the lab did not come up, and prints component logs on failure.
func needLab(t *testing.T, namespaces ...string) {
	t.Helper()
	if lab.upErr != nil {
		t.Fatalf("lab not up: %v", lab.upErr)
	}
	if lab.down {
		t.Fatal("lab already torn down")
	}
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			t.Logf("component logs:\n%s", lab.stack.Diagnostics(ctx, append([]string{"knative-serving"}, namespaces...)...))
		}
	})
}
