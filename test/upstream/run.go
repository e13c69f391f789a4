package upstream

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// RunSuite runs a compiled suite binary with args and env, streaming its output to out as it comes,
// and returns the verdicts of its top-level tests. The error is the binary's: a failing test, a
// timeout or a crash. The binary runs in its own process group and the whole group is killed when ctx
// ends, so no vegeta or prober goroutine's process outlives the run.
func RunSuite(ctx context.Context, bin string, args, env []string, dir string, out io.Writer) ([]Result, error) {
	col := &Collector{Out: out}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env, cmd.Dir = env, dir
	cmd.Stdout, cmd.Stderr = col, col
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	res := col.Results()
	if err != nil {
		return res, fmt.Errorf("%s: %w", bin, err)
	}
	for _, r := range res {
		if r.Status != "PASS" && r.Status != "SKIP" {
			return res, fmt.Errorf("%s: %s %s but the binary exited 0", bin, r.Test, r.Status)
		}
	}
	return res, nil
}
