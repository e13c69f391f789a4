package podharness

import (
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// listenInNetNS opens a TCP listener inside the named network namespace. A socket stays in the namespace
// it was created in, so only the creating OS thread has to switch; that thread is then discarded (the
// goroutine ends still locked) rather than returned to the scheduler in the wrong namespace.
func listenInNetNS(netns, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread exits with the goroutine.
		fd, err := unix.Open("/run/netns/"+netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: fmt.Errorf("open netns %s: %w", netns, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", netns, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- result{ln: ln, err: err}
	}()
	r := <-ch
	return r.ln, r.err
}
