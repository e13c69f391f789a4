package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/proc"
)

// RestartTimes are the moments of one apiserver restart, so a test can tell requests that failed
// during the outage from the others.
type RestartTimes struct {
	Stop    time.Time // the stop began
	Stopped time.Time // the process was gone
	Started time.Time // the new process was started
	Ready   time.Time // /readyz answered 200
}

// RestartAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after grace; grace 0 kills it at once,
// as a crash would), keeps it down for down, then starts it again with the command line the running
// process had (so flags added since `up` are kept) and waits up to readyTimeout for /readyz.
func (l *Lab) RestartAPIServer(ctx context.Context, grace, down, readyTimeout time.Duration) (RestartTimes, error) {
	var rt RestartTimes
	pid, ok := l.Procs.Alive(APIServer)
	if !ok {
		return rt, errors.New("kube-apiserver is not running")
	}
	argv, err := cmdline(pid)
	if err != nil {
		return rt, err
	}
	cl, err := l.Client()
	if err != nil {
		return rt, err
	}
	rt.Stop = time.Now()
	if err := l.Procs.Stop(ctx, APIServer, grace); err != nil {
		return rt, err
	}
	rt.Stopped = time.Now()
	select {
	case <-ctx.Done():
		return rt, ctx.Err()
	case <-time.After(down):
	}
	// The apiserver was started without extra environment (see StartNode).
	started, err := l.Procs.Start(proc.Spec{Name: APIServer, Path: argv[0], Args: argv[1:]})
	if err != nil {
		return rt, err
	}
	if !started {
		return rt, errors.New("kube-apiserver: another one is running")
	}
	rt.Started = time.Now()
	l.logf("restarted %s", APIServer)
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last string
	err = kube.Poll(rctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		b, err := cl.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		last = fmt.Sprint(strings.TrimSpace(string(b)), " ", err)
		return err == nil, nil
	})
	if err != nil {
		return rt, l.fail(APIServer, fmt.Errorf("not ready after restart: %w (last: %.300s)", err, last))
	}
	rt.Ready = time.Now()
	return rt, nil
}

// cmdline returns the argv of pid.
func cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	argv := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("pid %d: empty command line", pid)
	}
	return argv, nil
}
