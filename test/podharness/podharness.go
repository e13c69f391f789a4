// Package podharness runs real "pods" for tests: upstream's queue-proxy in front of a test app, each pod in
// a network namespace of its own, joined by a veth to a bridge the harness creates. The Kubernetes side is
// left to the test (fake informers). Tests using it need root and THAW_QUEUE_PROXY naming the queue-proxy
// binary (`make queue-proxy` builds it under $THAW_CACHE/knative-v0.50.0/bin/queue): without them they skip
// on a developer's machine and fail under CI, where the pod-level tier must run.
//
// Addresses come from 10.77.0.0/16: one /24 per Network, chosen by atomically creating its bridge
// (th77b<N>); the lab cluster's bridge uses 10.88.0.0/16 and is never touched.
package podharness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/internal/testutil"
)

const (
	// QueuePort is queue-proxy's serving port (QUEUE_SERVING_PORT), the port activators dial.
	QueuePort = 8012
	// QueueH2CPort is queue-proxy's serving port for h2c revisions (Endpoints port "http2").
	QueueH2CPort = 8013
	// UserPort is the test app's port (USER_PORT/PORT).
	UserPort = 8080
	// MetricsPort serves queue-proxy's protobuf autoscaling Stat.
	MetricsPort = 9090

	subnetPrefix = "10.77."
	maxPods      = 250
)

// Requirements reports why pod tests cannot run here ("" when they can).
func Requirements() string {
	if os.Geteuid() != 0 {
		return "pod-level tests need root (network namespaces)"
	}
	qp := os.Getenv("THAW_QUEUE_PROXY")
	if qp == "" {
		return "THAW_QUEUE_PROXY is not set (build it with `make queue-proxy`; it lands in $THAW_CACHE/knative-v0.50.0/bin/queue)"
	}
	if st, err := os.Stat(qp); err != nil || st.IsDir() {
		return fmt.Sprintf("THAW_QUEUE_PROXY=%s is not a file", qp)
	}
	for _, tool := range []string{"ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " (iproute2) is not installed"
		}
	}
	return ""
}

// Network is a bridge with its own /24; pods join it. Everything is removed in t.Cleanup.
type Network struct {
	t       testing.TB
	Subnet  int    // the third octet: the network is 10.77.<Subnet>.0/24
	Bridge  string // bridge interface name
	Gateway string // the bridge's IP, the host side of every pod link
	queue   string
	app     string

	mu   sync.Mutex
	next int
}

// NewNetwork creates a bridge on a free 10.77.N.0/24. When Requirements are not met it skips the test, or
// fails it under CI.
// The test app is built from test/apps/autoscale unless THAW_TEST_APP names a binary.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	if why := Requirements(); why != "" {
		testutil.SkipOutsideCI(t, "%s", why)
	}
	n := &Network{t: t, queue: os.Getenv("THAW_QUEUE_PROXY"), next: 2}
	n.app = os.Getenv("THAW_TEST_APP")
	if n.app == "" {
		n.app = n.BuildApp(t, "github.com/thaw-dev/thaw/test/apps/autoscale")
	}
	removeStale(t)
	// Start from a pid-derived subnet so parallel test processes rarely race for the same one; creating
	// the bridge fails if its name exists, which makes the choice atomic across processes.
	start := os.Getpid() % 254
	for i := range 254 {
		sub := (start+i)%254 + 1
		br := fmt.Sprintf("th77b%d", sub)
		if err := run("ip", "link", "add", br, "type", "bridge"); err != nil {
			continue
		}
		n.Subnet, n.Bridge, n.Gateway = sub, br, fmt.Sprintf("%s%d.1", subnetPrefix, sub)
		t.Cleanup(func() { _ = run("ip", "link", "del", br) })
		// The owner's PID lets a later run remove what a killed test process left behind.
		n.must("ip", "link", "set", "dev", br, "alias", fmt.Sprintf("%s%d", ownerAlias, os.Getpid()))
		break
	}
	if n.Bridge == "" {
		t.Fatal("no free 10.77.N.0/24 bridge name")
	}
	n.must("ip", "addr", "add", n.Gateway+"/24", "dev", n.Bridge)
	n.must("ip", "link", "set", n.Bridge, "up")
	return n
}

const ownerAlias = "thaw-podharness pid="

// removeStale deletes harness bridges, and their pods' namespaces, whose owning process is gone (a test
// binary killed before its cleanups ran).
func removeStale(t testing.TB) {
	out, err := exec.Command("ip", "-o", "link", "show", "type", "bridge").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		i := strings.Index(line, "alias "+ownerAlias)
		if i < 0 {
			continue
		}
		pid, err := strconv.Atoi(strings.Fields(line[i+len("alias "+ownerAlias):])[0])
		if err != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // malformed, or its owner still runs
		}
		var sub int
		name := strings.TrimSuffix(strings.Fields(line)[1], ":")
		if _, err := fmt.Sscanf(name, "th77b%d", &sub); err != nil {
			continue
		}
		if nsOut, err := exec.Command("ip", "netns", "list").Output(); err == nil {
			prefix := fmt.Sprintf("th77-%d-", sub)
			for _, f := range strings.Fields(string(nsOut)) {
				if strings.HasPrefix(f, prefix) {
					_ = run("ip", "netns", "del", f)
				}
			}
		}
		if err := run("ip", "link", "del", name); err == nil {
			t.Logf("removed %s left by process %d", name, pid)
		}
	}
}

// BuildApp builds a main package (an import path of this module, like
// "github.com/thaw-dev/thaw/test/apps/grpcping") into a temporary directory and returns the binary.
func (n *Network) BuildApp(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test app: %v\n%s", err, b)
	}
	return out
}

func run(name string, args ...string) error {
	if b, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(b)))
	}
	return nil
}

func (n *Network) must(name string, args ...string) {
	n.t.Helper()
	if err := run(name, args...); err != nil {
		n.t.Fatal(err)
	}
}

// PodOptions configure a pod. Zero values take sensible defaults.
type PodOptions struct {
	// Name is the pod name (SERVING_POD); default "pod-<index>".
	Name                      string
	Namespace, Revision       string // default "default", "rev"
	Configuration             string // default "cfg"
	ContainerConcurrency      int    // CONTAINER_CONCURRENCY; 0 = unlimited
	RevisionTimeout           time.Duration
	RevisionResponseStartTime time.Duration
	RevisionIdleTimeout       time.Duration
	// ReadinessProbe is SERVING_READINESS_PROBE (JSON); default a TCP probe of the app port, as the
	// controller writes it.
	ReadinessProbe string
	// App is the app binary; default the Network's test/apps/autoscale (or THAW_TEST_APP). Use
	// Network.BuildApp for another app of the module. The app must listen on $PORT.
	App string
	// AppArgs and AppEnv are passed to the app ("KEY=value").
	AppArgs []string
	AppEnv  []string
	// H2C makes queue-proxy serve on QueueH2CPort, as for a revision whose port is named h2c.
	H2C bool
	// DeferApp starts only queue-proxy; call Pod.StartApp to start the app (a cold start).
	DeferApp bool
	// Delay is added one way, in both directions, on the pod's serving port (RTT = 2×Delay), by a
	// delaying proxy inside the pod's namespace (this kernel has no netem). Queue-proxy then listens on
	// QueuePort+10000 behind it.
	Delay time.Duration
	// FullDuplex sets ENABLE_HTTP_FULL_DUPLEX on queue-proxy.
	FullDuplex bool
	// CertDir, if set, holds tls.crt and tls.key, which queue-proxy finds at
	// /var/lib/knative/certs (the serving-certs Secret's mount) and so serves TLS
	// on 8112 (system-internal-tls). The directory is put there in a mount
	// namespace of queue-proxy's own, over a tmpfs on /var/lib: the host's
	// file system is not touched.
	CertDir string
}

// Pod is one running pod.
type Pod struct {
	Name  string
	IP    string
	Port  int    // serving port: QueuePort, or QueueH2CPort with H2C
	NetNS string // network namespace name, for `ip netns exec`
	Veth  string // host side of the pod's link

	n     *Network
	opts  PodOptions
	mu    sync.Mutex
	queue *exec.Cmd
	app   *exec.Cmd
	delay *DelayProxy
	logs  string
}

// Dest is the "ip:port" an activator dials (queue-proxy's serving port).
func (p *Pod) Dest() string { return fmt.Sprintf("%s:%d", p.IP, p.Port) }

// URL is http://Dest().
func (p *Pod) URL() string { return "http://" + p.Dest() }

// MetricsURL is queue-proxy's autoscaling stat endpoint.
func (p *Pod) MetricsURL() string { return fmt.Sprintf("http://%s:%d/metrics", p.IP, MetricsPort) }

// StartPod creates the pod's namespace and link and starts queue-proxy and (unless DeferApp) the app.
// It returns once queue-proxy answers (and, with the app, once the queue probe passes).
func (n *Network) StartPod(t testing.TB, o PodOptions) *Pod {
	t.Helper()
	n.mu.Lock()
	idx := n.next
	n.next++
	n.mu.Unlock()
	if idx > maxPods {
		t.Fatalf("more than %d pods on one Network", maxPods-1)
	}
	if o.Name == "" {
		o.Name = fmt.Sprintf("pod-%d", idx)
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Revision == "" {
		o.Revision = "rev"
	}
	if o.Configuration == "" {
		o.Configuration = "cfg"
	}
	if o.RevisionTimeout == 0 {
		o.RevisionTimeout = 300 * time.Second
	}
	if o.ReadinessProbe == "" {
		o.ReadinessProbe = fmt.Sprintf(`{"tcpSocket":{"port":%d,"host":"127.0.0.1"},"successThreshold":1}`, UserPort)
	}
	if o.App == "" {
		o.App = n.app
	}
	p := &Pod{
		Name:  o.Name,
		IP:    fmt.Sprintf("%s%d.%d", subnetPrefix, n.Subnet, idx),
		Port:  QueuePort,
		NetNS: fmt.Sprintf("th77-%d-%d", n.Subnet, idx),
		Veth:  fmt.Sprintf("th77v%d-%d", n.Subnet, idx),
		n:     n,
		opts:  o,
		logs:  t.TempDir(),
	}
	n.must("ip", "netns", "add", p.NetNS)
	t.Cleanup(func() { _ = run("ip", "netns", "del", p.NetNS) })
	n.must("ip", "link", "add", p.Veth, "type", "veth", "peer", "name", "eth0", "netns", p.NetNS)
	t.Cleanup(func() { _ = run("ip", "link", "del", p.Veth) }) // usually gone with the namespace already
	n.must("ip", "link", "set", p.Veth, "master", n.Bridge, "up")
	n.must("ip", "-n", p.NetNS, "addr", "add", p.IP+"/24", "dev", "eth0")
	n.must("ip", "-n", p.NetNS, "link", "set", "eth0", "up")
	n.must("ip", "-n", p.NetNS, "link", "set", "lo", "up")
	n.must("ip", "-n", p.NetNS, "route", "add", "default", "via", n.Gateway)
	// Processes go before the namespace (cleanups run last-in first-out).
	t.Cleanup(p.Kill)

	if o.H2C {
		p.Port = QueueH2CPort
	}
	queuePort := p.Port
	if o.Delay > 0 {
		queuePort = p.Port + 10000
		ln, err := listenInNetNS(p.NetNS, p.Dest())
		if err != nil {
			t.Fatalf("delay listener in %s: %v", p.NetNS, err)
		}
		p.delay = newDelayProxyOn(t, ln, fmt.Sprintf("%s:%d", p.IP, queuePort), o.Delay)
	}
	p.startQueue(t, queuePort)
	if !o.DeferApp {
		p.StartApp(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.wait(ctx, !o.DeferApp); err != nil {
		t.Fatalf("pod %s never came up: %v\n%s", p.Name, err, p.Logs())
	}
	return p
}

func (p *Pod) env(queuePort int) []string {
	o := p.opts
	return []string{
		"SERVING_NAMESPACE=" + o.Namespace,
		"SERVING_CONFIGURATION=" + o.Configuration,
		"SERVING_REVISION=" + o.Revision,
		"SERVING_SERVICE=",
		"SERVING_POD=" + p.Name,
		"SERVING_POD_IP=" + p.IP,
		"QUEUE_SERVING_PORT=" + strconv.Itoa(queuePort),
		"QUEUE_SERVING_TLS_PORT=8112",
		"USER_PORT=" + strconv.Itoa(UserPort),
		"CONTAINER_CONCURRENCY=" + strconv.Itoa(o.ContainerConcurrency),
		"REVISION_TIMEOUT_SECONDS=" + strconv.Itoa(int(o.RevisionTimeout/time.Second)),
		"REVISION_RESPONSE_START_TIMEOUT_SECONDS=" + strconv.Itoa(int(o.RevisionResponseStartTime/time.Second)),
		"REVISION_IDLE_TIMEOUT_SECONDS=" + strconv.Itoa(int(o.RevisionIdleTimeout/time.Second)),
		"SERVING_READINESS_PROBE=" + o.ReadinessProbe,
		"SERVING_LOGGING_CONFIG=",
		"SERVING_LOGGING_LEVEL=info",
		"ENABLE_HTTP_FULL_DUPLEX=" + strconv.FormatBool(o.FullDuplex),
		"PATH=" + os.Getenv("PATH"),
	}
}

// start runs bin inside the pod's namespace. Pdeathsig reaps it if the test process dies.
func (p *Pod) start(t testing.TB, name, bin string, env, args []string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(p.logs, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.NetNS, bin}, args...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s in %s: %v", name, p.NetNS, err)
	}
	// ip netns exec execs bin in place, so cmd.Process.Pid is bin's PID.
	go func() { _ = cmd.Wait(); logf.Close() }()
	return cmd
}

func (p *Pod) startQueue(t testing.TB, port int) {
	bin, args := p.n.queue, []string(nil)
	if p.opts.CertDir != "" {
		// unshare and sh exec in place, so the PID stays queue-proxy's.
		bin, args = "unshare", []string{"--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs tmpfs /var/lib && mkdir -p /var/lib/knative/certs && cp "$1"/tls.crt "$1"/tls.key /var/lib/knative/certs/ && exec "$2"`,
			"sh", p.opts.CertDir, p.n.queue}
	}
	cmd := p.start(t, "queue-proxy", bin, p.env(port), args)
	p.mu.Lock()
	p.queue = cmd
	p.mu.Unlock()
}

// StartApp starts the test app (for a pod made with DeferApp, or after StopApp).
func (p *Pod) StartApp(t testing.TB) {
	t.Helper()
	env := append([]string{"PORT=" + strconv.Itoa(UserPort), "K_REVISION=" + p.opts.Revision,
		"PATH=" + os.Getenv("PATH")}, p.opts.AppEnv...)
	cmd := p.start(t, "app", p.opts.App, env, p.opts.AppArgs)
	p.mu.Lock()
	p.app = cmd
	p.mu.Unlock()
}

// wait polls until queue-proxy listens on its serving port (with ready, until the queue probe passes).
// Queue-proxy holds a probe up to 10s while its app is not ready, and answers 503 at once to probes
// overlapping one in progress; hence plain connects when not waiting for readiness.
func (p *Pod) wait(ctx context.Context, ready bool) error {
	if !ready {
		var d net.Dialer
		for {
			c, err := d.DialContext(ctx, "tcp", p.Dest())
			if err == nil {
				c.Close()
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	defer client.CloseIdleConnections()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/healthz", nil)
		req.Header.Set("K-Network-Probe", "queue")
		req.Header.Set("User-Agent", "Knative-Activator-Probe")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("queue probe answered %d", resp.StatusCode)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitReady waits until the pod's queue probe passes.
func (p *Pod) WaitReady(ctx context.Context) error { return p.wait(ctx, true) }

func signal(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}

func waitExit(cmd *exec.Cmd, d time.Duration) bool {
	if cmd == nil || cmd.Process == nil {
		return true
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		// Signal 0 fails once the process is gone (the Wait goroutine reaps it).
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// Stop sends SIGTERM to queue-proxy and the app, as the kubelet does; queue-proxy then drains (its
// probe answers 503) before exiting. It does not wait.
func (p *Pod) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	signal(p.queue, syscall.SIGTERM)
	signal(p.app, syscall.SIGTERM)
}

// StopApp kills the app only: queue-proxy stays and its probe fails.
func (p *Pod) StopApp() {
	p.mu.Lock()
	app := p.app
	p.app = nil
	p.mu.Unlock()
	signal(app, syscall.SIGKILL)
	waitExit(app, 5*time.Second)
}

// Kill SIGKILLs both processes and waits for them to exit. The namespace stays, so the pod IP now
// refuses connections (TCP RST) until the test ends.
func (p *Pod) Kill() {
	p.mu.Lock()
	q, a := p.queue, p.app
	p.queue, p.app = nil, nil
	p.mu.Unlock()
	signal(q, syscall.SIGKILL)
	signal(a, syscall.SIGKILL)
	waitExit(q, 5*time.Second)
	waitExit(a, 5*time.Second)
}

// SetRefusing makes the pod refuse connections on its serving port: queue-proxy is killed, so connects
// get a TCP RST (no byte reaches any process). The app keeps running.
func (p *Pod) SetRefusing() {
	p.mu.Lock()
	q := p.queue
	p.queue = nil
	p.mu.Unlock()
	signal(q, syscall.SIGKILL)
	waitExit(q, 5*time.Second)
	if p.delay != nil {
		// The delay proxy would otherwise accept; close it so the port refuses too.
		p.delay.Close()
	}
}

// Logs returns queue-proxy's and the app's output so far, for failure messages.
func (p *Pod) Logs() string {
	var b strings.Builder
	for _, name := range []string{"queue-proxy", "app"} {
		data, _ := os.ReadFile(filepath.Join(p.logs, name+".log"))
		fmt.Fprintf(&b, "--- %s %s:\n%s\n", p.Name, name, data)
	}
	return b.String()
}
