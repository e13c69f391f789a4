//go:build e2e

package upstream

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/labtest"
)

const tier = "upstream"

// env is the run's shared state, set by TestMain.
var env struct {
	lab    *labtest.Lab
	client *kube.Client
	upErr  error
}

func TestMain(m *testing.M) {
	if os.Getenv("THAW_UPSTREAM") != "1" {
		fmt.Println("test/upstream: skipped: set THAW_UPSTREAM=1 (or run `make test-upstream`) to run upstream's suites on the lab")
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		os.Exit(testutil.MainCannotRun("test/upstream", "the lab needs root"))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	env.lab, env.upErr = labtest.Open(ctx, labtest.Options{Tier: tier, Out: os.Stdout})
	if env.upErr == nil {
		env.client, env.upErr = env.lab.Stack.Lab.Client()
	}
	if env.upErr != nil {
		fmt.Println("test/upstream:", env.upErr)
	}
	code := m.Run()
	if err := env.lab.Close(ctx, os.Stdout, tier); err != nil {
		fmt.Println("test/upstream: down:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
