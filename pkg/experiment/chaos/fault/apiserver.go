package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/lab/proc"
)

// Daemons stops and starts the lab's control-plane processes (proc.Manager).
type Daemons interface {
	Alive(name string) (int, bool)
	Stop(ctx context.Context, name string, grace time.Duration) error
	Start(s proc.Spec) (bool, error)
}

// Outage stops one of the lab's daemons (kube-apiserver) for the hold and starts it again with the
// command line the running process had, then waits until Ready says it serves. Nothing that talks to
// the apiserver works meanwhile: Leases are not renewed, informers' watches break, the ingress and the
// data path keep what they had.
type Outage struct {
	Daemons Daemons
	Name    string
	// Grace before SIGKILL (0: killed at once, as a crash).
	Grace time.Duration
	// Ready returns nil once the restarted daemon serves; the undo polls it.
	Ready func(ctx context.Context) error
	// Cmdline reads a process's argv (nil: /proc/PID/cmdline).
	Cmdline func(pid int) ([]string, error)
	// Poll is the interval between readiness checks (default 200ms).
	Poll  time.Duration
	Clock clock.WithTicker
}

// Inject stops the daemon. The undo starts it even when the stop failed half-way (a cancelled wait).
func (o Outage) Inject(ctx context.Context) (string, Undo, error) {
	pid, ok := o.Daemons.Alive(o.Name)
	if !ok {
		return o.Name, nil, fmt.Errorf("%s is not running", o.Name)
	}
	read := o.Cmdline
	if read == nil {
		read = procCmdline
	}
	argv, err := read(pid)
	if err != nil {
		return o.Name, nil, err
	}
	undo := func(ctx context.Context) error {
		if _, err := o.Daemons.Start(proc.Spec{Name: o.Name, Path: argv[0], Args: argv[1:]}); err != nil {
			return err
		}
		return o.waitReady(ctx)
	}
	target := fmt.Sprintf("%s (pid %d)", o.Name, pid)
	if err := o.Daemons.Stop(ctx, o.Name, o.Grace); err != nil {
		return target, undo, err
	}
	return target + " stopped", undo, nil
}

func (o Outage) waitReady(ctx context.Context) error {
	if o.Ready == nil {
		return nil
	}
	every := o.Poll
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	var c clock.WithTicker = clock.RealClock{}
	if o.Clock != nil {
		c = o.Clock
	}
	t := c.NewTicker(every)
	defer t.Stop()
	var last error
	for {
		if last = o.Ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after its restart: %w (last: %v)", o.Name, ctx.Err(), last)
		case <-t.C():
		}
	}
}

func procCmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	argv := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("empty command line")
	}
	return argv, nil
}
