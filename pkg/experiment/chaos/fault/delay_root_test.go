package fault

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
)

// needNetAdmin gates the root tests of this package to the pod-level tier (make test-pod sets
// THAW_QUEUE_PROXY): elsewhere they skip, and under CI, where that tier runs as root, anything
// missing fails them.
func needNetAdmin(t *testing.T) {
	t.Helper()
	if os.Getenv("THAW_QUEUE_PROXY") == "" && !testutil.InCI() {
		t.Skip("pod-level test (network namespaces, iptables, NFQUEUE): runs in make test-pod, as root")
	}
	testutil.NeedRoot(t, "network namespaces, iptables, NFQUEUE")
	for _, tool := range []string{"ip", "iptables", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipOutsideCI(t, "%s is not installed", tool)
		}
	}
	if _, err := os.Stat("/proc/net/netfilter/nfnetlink_queue"); err != nil {
		testutil.SkipOutsideCI(t, "the kernel has no nfnetlink_queue: %v", err)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetNS runs fn on a thread in the network namespace at path: a socket made there stays there.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with the goroutine: it is in the wrong namespace.
			errc <- fmt.Errorf("back to the test's namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// nsPair is two network namespaces joined by a veth: "act" (192.0.2.1, a stand-in activator with a
// process in it) and "pod" (192.0.2.2, an echo server on the queue-proxy port). The addresses live
// only inside the two namespaces.
type nsPair struct {
	act, pod string // namespace names under /run/netns
	pid      int    // the process in act
}

func newNSPair(t *testing.T) *nsPair {
	t.Helper()
	id := os.Getpid() % 100000
	p := &nsPair{act: fmt.Sprintf("thawdq%da", id), pod: fmt.Sprintf("thawdq%db", id)}
	va, vb := fmt.Sprintf("tdq%da", id), fmt.Sprintf("tdq%db", id)
	for _, ns := range []string{p.act, p.pod} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "link", "add", va, "netns", p.act, "type", "veth", "peer", "name", vb, "netns", p.pod)
	for _, c := range [][]string{
		{p.act, "ip", "addr", "add", "192.0.2.1/24", "dev", va}, {p.act, "ip", "link", "set", va, "up"}, {p.act, "ip", "link", "set", "lo", "up"},
		{p.pod, "ip", "addr", "add", "192.0.2.2/24", "dev", vb}, {p.pod, "ip", "link", "set", vb, "up"}, {p.pod, "ip", "link", "set", "lo", "up"},
	} {
		run(t, "ip", append([]string{"netns", "exec"}, c...)...)
	}
	// A process in act, as the activator's container is: the fault finds namespaces by PID.
	sleeper := exec.Command("ip", "netns", "exec", p.act, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	p.pid = sleeper.Process.Pid
	// ip netns exec execs sleep in place: wait until the PID is in act's namespace.
	var err error
	actIno := nsInode(t, "/run/netns/"+p.act)
	testutil.Eventually(t, "the sleeper in its namespace", func() bool {
		_, err = os.Stat(fmt.Sprintf("/proc/%d/ns/net", p.pid))
		return err == nil && nsInode(t, fmt.Sprintf("/proc/%d/ns/net", p.pid)) == actIno
	})
	return p
}

func nsInode(t *testing.T, path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// echo serves one-byte echoes on 192.0.2.2:8012 in pod until the test ends.
func (p *nsPair) echo(t *testing.T) {
	var ln net.Listener
	if err := inNetNS("/run/netns/"+p.pod, func() (err error) {
		ln, err = net.Listen("tcp", "192.0.2.2:8012")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// dial connects from act, returning the connection and how long the handshake took.
func (p *nsPair) dial(t *testing.T) (net.Conn, time.Duration) {
	var c net.Conn
	var took time.Duration
	if err := inNetNS("/run/netns/"+p.act, func() (err error) {
		start := time.Now()
		c, err = net.DialTimeout("tcp", "192.0.2.2:8012", 5*time.Second)
		took = time.Since(start)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, took
}

// roundTrip is the median of five one-byte echoes on c.
func roundTrip(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	var rtts []time.Duration
	b := []byte{0}
	for range 5 {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

// TestNetworkDelayAddsRTTAndUndoes applies the delay fault, as the chaos run does, to a stand-in
// activator's namespace and measures TCP round trips to a stand-in pod before, during and after.
func TestNetworkDelayAddsRTTAndUndoes(t *testing.T) {
	needNetAdmin(t)
	p := newNSPair(t)
	p.echo(t)
	conn, _ := p.dial(t)
	before := roundTrip(t, conn)

	const delay = 100 * time.Millisecond
	kc := fake.NewClientset(pod(SystemNamespace, "activator-a", "activator", "activator", "ida", time.Now(), true))
	cd := Containerd{Exec: func(ctx context.Context, name string, args ...string) ([]byte, error) {
		if name == "" || slices.Contains(args, "tasks") {
			return fmt.Appendf(nil, "TASK PID STATUS\nida %d RUNNING\n", p.pid), nil
		}
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out.String())
		}
		return out.Bytes(), err
	}}
	target, undo, err := NetworkDelay(cd, Pods{Kube: kc, Component: "activator"}, delay, NFQueueDelayer(delay, 0)).Inject(context.Background())
	if err != nil {
		if undo != nil {
			_ = undo(context.Background())
		}
		t.Fatalf("inject: %v", err)
	}
	t.Logf("injected: %s", target)
	during := roundTrip(t, conn)
	conn2, connect := p.dial(t)
	if err := undo(context.Background()); err != nil {
		t.Fatalf("undo: %v", err)
	}
	after := roundTrip(t, conn)
	after2 := roundTrip(t, conn2)
	t.Logf("round trip before %v, during %v (connect %v), after %v", before, during, connect, after)

	if before >= delay/2 {
		t.Fatalf("round trip before the fault %v: the machine is too slow to measure a %v delay", before, delay)
	}
	if during < delay || during > delay+before+50*time.Millisecond {
		t.Errorf("round trip during the fault %v, want about %v + %v", during, delay, before)
	}
	if connect < delay {
		t.Errorf("connect during the fault took %v, want at least %v (the SYN is delayed)", connect, delay)
	}
	if after >= delay/2 || after2 >= delay/2 {
		t.Errorf("round trips after the undo %v, %v: the delay is still there", after, after2)
	}
	rules := run(t, "ip", "netns", "exec", p.act, "iptables", "-w", "-S")
	if strings.Contains(rules, "NFQUEUE") {
		t.Errorf("rules left after the undo:\n%s", rules)
	}
	if q, err := exec.Command("ip", "netns", "exec", p.act, "cat", "/proc/net/netfilter/nfnetlink_queue").Output(); err != nil || strings.TrimSpace(string(q)) != "" {
		t.Errorf("queues left bound after the undo: %q %v", q, err)
	}

	// A run that dies with the fault in place leaves the rule but no queue: --queue-bypass lets the
	// packets through undelayed rather than dropping them.
	var opened []Delayer
	open := func(pid int) (Delayer, error) {
		d, err := NFQueueDelayer(delay, 0)(pid)
		if err == nil {
			opened = append(opened, d)
		}
		return d, err
	}
	_, undo, err = NetworkDelay(cd, Pods{Kube: kc, Component: "activator"}, delay, open).Inject(context.Background())
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	for _, d := range opened {
		_ = d.Close() // as the process's exit would
	}
	if got := roundTrip(t, conn); got >= delay/2 {
		t.Errorf("round trip with the rule but no queue bound %v: packets should bypass the queue", got)
	}
	if err := undo(context.Background()); err != nil {
		t.Fatalf("undo after the queues went: %v", err)
	}
	if rules := run(t, "ip", "netns", "exec", p.act, "iptables", "-w", "-S"); strings.Contains(rules, "NFQUEUE") {
		t.Errorf("rules left after the undo:\n%s", rules)
	}
}
