package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/pki"
	"github.com/thaw-dev/thaw/pkg/lab/proc"
)

// Daemon names, in start order. Down stops them in reverse.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	Containerd        = "containerd"
	Kubelet           = "kubelet"
	KubeProxy         = "kube-proxy"
)

// Daemons lists the lab's daemons in start order.
var Daemons = []string{Etcd, APIServer, ControllerManager, Scheduler, Containerd, Kubelet, KubeProxy}

// Lab is one lab on this host.
type Lab struct {
	Cfg   Config
	Tools Tools
	Procs *proc.Manager
	Out   io.Writer
}

// New returns a Lab for cfg.
func New(cfg Config, tools Tools, out io.Writer) *Lab {
	if out == nil {
		out = io.Discard
	}
	return &Lab{Cfg: cfg, Tools: tools, Out: out, Procs: &proc.Manager{PidDir: cfg.PidDir(), LogDir: cfg.LogDir()}}
}

func (l *Lab) logf(format string, args ...any) {
	fmt.Fprintf(l.Out, "lab: "+format+"\n", args...)
}

// Network is the lab's host network plan.
func (l *Lab) Network() host.Network {
	return host.Network{Bridge: l.Cfg.Bridge, BridgeCIDR: l.Cfg.BridgeCIDR(), ServiceCIDR: l.Cfg.ServiceCIDR}
}

// ImportFunc imports the lab's images into containerd (namespace k8s.io) through the socket.
type ImportFunc func(ctx context.Context, socket string) error

// StartNode brings up the host network, certificates, control plane, containerd (then importImages)
// and the node daemons, and waits for the node to be Ready. It is idempotent: running daemons are kept.
func (l *Lab) StartNode(ctx context.Context, importImages ImportFunc) error {
	c := l.Cfg
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network, mounts, containerd)")
	}
	if err := l.checkTools(); err != nil {
		return err
	}
	if l.Stale() {
		// A lab whose daemons were killed without `down` (a reboot, a killed terminal) left mounts,
		// the bridge and chains behind: restore the host first, so the baseline stays the true one.
		l.logf("cleaning up a lab left behind without `down`")
		if err := l.Down(ctx); err != nil {
			l.logf("cleanup of the old lab: %v", err)
		}
	}
	for _, d := range []string{c.Dir, c.RunDir(), c.LogDir(), c.PidDir(), c.ConfDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	st, err := host.LoadOrRecord(c.StateFile())
	if err != nil {
		return err
	}
	_ = st
	t0 := time.Now()
	if err := host.SetupNetwork(ctx, l.Network()); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	files, err := pki.Ensure(pki.Options{
		Dir:      c.PKIDir(),
		NodeName: c.NodeName,
		IPs:      []net.IP{net.ParseIP(c.BridgeIP), net.ParseIP(c.APIServerIP), net.ParseIP("127.0.0.1")},
		DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + c.ClusterDomain, "localhost", c.NodeName},
	})
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := l.writeConfigs(files); err != nil {
		return err
	}
	l.logf("network, certificates and configs ready (%s)", since(t0))

	if err := l.start(Etcd, l.Tools.Etcd, l.etcdArgs()); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://127.0.0.1:2379/health", nil, "", 30*time.Second); err != nil {
		return l.fail(Etcd, err)
	}
	if err := l.start(APIServer, l.Tools.KubeAPIServer, l.apiserverArgs(files)); err != nil {
		return err
	}
	// containerd and the image import run while the apiserver starts.
	if err := l.start(Containerd, l.Tools.Containerd, []string{"--config", filepath.Join(c.ConfDir(), "containerd.toml")},
		"PATH="+toolPath(l.Tools)); err != nil {
		return err
	}
	if err := waitSocket(ctx, c.ContainerdSock(), 30*time.Second); err != nil {
		return l.fail(Containerd, err)
	}
	l.logf("etcd and containerd up (%s)", since(t0))
	if importImages != nil {
		ti := time.Now()
		if err := importImages(ctx, c.ContainerdSock()); err != nil {
			return fmt.Errorf("import images: %w", err)
		}
		l.logf("images imported (%s)", since(ti))
	}
	if err := waitHTTP(ctx, c.APIServerURL()+"/readyz", files, files.AdminToken, 90*time.Second); err != nil {
		return l.fail(APIServer, err)
	}
	l.logf("apiserver ready (%s)", since(t0))
	for _, d := range []struct{ name, bin string }{{ControllerManager, l.Tools.KubeControllerManager}, {Scheduler, l.Tools.KubeScheduler}} {
		args := l.controllerManagerArgs(files)
		if d.name == Scheduler {
			args = l.schedulerArgs()
		}
		if err := l.start(d.name, d.bin, args); err != nil {
			return err
		}
	}
	if err := l.start(Kubelet, l.Tools.Kubelet, l.kubeletArgs(), "PATH="+toolPath(l.Tools)); err != nil {
		return err
	}
	if err := l.start(KubeProxy, l.Tools.KubeProxy, []string{"--config", filepath.Join(c.ConfDir(), "kube-proxy.yaml"), "--v=1"},
		"PATH="+toolPath(l.Tools)); err != nil {
		return err
	}
	cl, err := l.Client()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := cl.WaitNodeReady(wctx, c.NodeName); err != nil {
		return l.fail(Kubelet, err)
	}
	l.logf("node %s Ready (%s)", c.NodeName, since(t0))
	return nil
}

// Stale reports a lab that changed the host (its state file exists) but none of whose daemons runs.
func (l *Lab) Stale() bool {
	if _, err := os.Stat(l.Cfg.StateFile()); err != nil {
		return false
	}
	for _, d := range Daemons {
		if _, ok := l.Procs.Alive(d); ok {
			return false
		}
	}
	return true
}

// Active reports whether the lab changed the host and has not been torn down.
func (l *Lab) Active() bool {
	_, err := os.Stat(l.Cfg.StateFile())
	return err == nil
}

// Client returns a client with the admin kubeconfig.
func (l *Lab) Client() (*kube.Client, error) {
	return kube.NewFromKubeconfig(l.Cfg.Kubeconfig())
}

func (l *Lab) checkTools() error {
	t := l.Tools
	var missing []string
	for name, p := range map[string]string{
		"etcd": t.Etcd, "kube-apiserver": t.KubeAPIServer, "kube-controller-manager": t.KubeControllerManager,
		"kube-scheduler": t.KubeScheduler, "kubelet": t.Kubelet, "kube-proxy": t.KubeProxy,
		"containerd": t.Containerd, "containerd-shim-runc-v2": t.ContainerdShim, "runc": t.Runc,
		"CNI bridge plugin": filepath.Join(t.CNIBinDir, "bridge"),
	} {
		if p == "" {
			missing = append(missing, name)
		} else if _, err := os.Stat(p); err != nil {
			missing = append(missing, name+" ("+p+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools: %s (build them first)", strings.Join(missing, ", "))
	}
	return nil
}

// toolPath puts the shim, runc and iptables where containerd, the kubelet and kube-proxy look for them.
func toolPath(t Tools) string {
	dirs := []string{filepath.Dir(t.ContainerdShim), filepath.Dir(t.Runc), "/usr/sbin", "/usr/bin", "/sbin", "/bin"}
	return strings.Join(dirs, ":")
}

func (l *Lab) start(name, bin string, args []string, env ...string) error {
	started, err := l.Procs.Start(proc.Spec{Name: name, Path: bin, Args: args, Env: env})
	if err != nil {
		return err
	}
	if started {
		l.logf("started %s", name)
	}
	return nil
}

// fail wraps err with the tail of the daemon's log, which usually says why.
func (l *Lab) fail(name string, err error) error {
	return fmt.Errorf("%s: %w\n--- %s (last lines) ---\n%s", name, err, l.Procs.LogFile(name), l.Procs.Tail(name, 25))
}

func (l *Lab) writeConfigs(f *pki.Files) error {
	c := l.Cfg
	server := c.APIServerURL()
	for _, kc := range []struct{ path, tok, user string }{
		{c.Kubeconfig(), f.AdminToken, "admin"},
		{c.kubeconfigFor("kubelet"), f.KubeletToken, "kubelet"},
		{c.kubeconfigFor("kube-controller-manager"), f.CMToken, "kube-controller-manager"},
		{c.kubeconfigFor("kube-scheduler"), f.SchedToken, "kube-scheduler"},
		{c.kubeconfigFor("kube-proxy"), f.ProxyToken, "kube-proxy"},
	} {
		if err := pki.WriteKubeconfig(kc.path, server, f.CACert, kc.tok, kc.user); err != nil {
			return err
		}
	}
	conf := c.ConfDir()
	for name, content := range map[string]string{
		"containerd.toml":               c.containerdConfig(l.Tools),
		"kubelet.yaml":                  c.kubeletConfig(),
		"kube-proxy.yaml":               c.kubeProxyConfig(),
		"resolv.conf":                   "# the lab's pods resolve only cluster names (CoreDNS has no upstream)\noptions ndots:5\n",
		"../cni/net.d/10-thaw.conflist": c.cniConfig(),
		"audit-policy.yaml":             auditPolicy,
	} {
		if err := writeFile(filepath.Join(conf, name), content); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) etcdArgs() []string {
	return []string{
		"--name=thaw", "--data-dir=" + l.Cfg.EtcdDir(),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=thaw=http://127.0.0.1:2380",
		// The lab is disposable: durability is not worth the fsync latency.
		"--unsafe-no-fsync", "--log-level=warn",
	}
}

func (l *Lab) apiserverArgs(f *pki.Files) []string {
	c := l.Cfg
	return append([]string{
		"--etcd-servers=http://127.0.0.1:2379",
		// Pods reach the apiserver through the `kubernetes` Service, whose endpoint is this address:
		// it must be the bridge IP, not loopback.
		"--bind-address=" + c.BridgeIP, "--advertise-address=" + c.BridgeIP, "--secure-port=6443",
		"--tls-cert-file=" + f.ServerCert, "--tls-private-key-file=" + f.ServerKey,
		"--client-ca-file=" + f.CACert, "--token-auth-file=" + f.TokenFile,
		"--service-account-issuer=https://kubernetes.default.svc." + c.ClusterDomain,
		"--service-account-key-file=" + f.SAPub, "--service-account-signing-key-file=" + f.SAKey,
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--kubelet-client-certificate=" + f.ClientCert, "--kubelet-client-key=" + f.ClientKey,
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true", "--profiling=false",
		"--cert-dir=" + filepath.Join(c.RunDir(), "apiserver-certs"),
		"--v=1",
	}, c.auditArgs()...)
}

func (l *Lab) controllerManagerArgs(f *pki.Files) []string {
	c := l.Cfg
	return []string{
		"--kubeconfig=" + c.kubeconfigFor("kube-controller-manager"),
		"--authentication-kubeconfig=" + c.kubeconfigFor("kube-controller-manager"),
		"--authorization-kubeconfig=" + c.kubeconfigFor("kube-controller-manager"),
		"--service-account-private-key-file=" + f.SAKey, "--root-ca-file=" + f.CACert,
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--allocate-node-cidrs=false",
		"--leader-elect=false", "--bind-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(c.RunDir(), "controller-manager-certs"),
		"--v=1",
	}
}

func (l *Lab) schedulerArgs() []string {
	c := l.Cfg
	return []string{
		"--kubeconfig=" + c.kubeconfigFor("kube-scheduler"),
		"--authentication-kubeconfig=" + c.kubeconfigFor("kube-scheduler"),
		"--authorization-kubeconfig=" + c.kubeconfigFor("kube-scheduler"),
		"--leader-elect=false", "--bind-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(c.RunDir(), "scheduler-certs"),
		"--v=1",
	}
}

func (l *Lab) kubeletArgs() []string {
	c := l.Cfg
	return []string{
		"--config=" + filepath.Join(c.ConfDir(), "kubelet.yaml"),
		"--kubeconfig=" + c.kubeconfigFor("kubelet"),
		"--root-dir=" + c.KubeletDir(),
		"--cert-dir=" + filepath.Join(c.KubeletDir(), "pki"),
		// Loopback is rejected and auto-detection would pick the VM's own interface.
		"--node-ip=" + c.BridgeIP,
		"--hostname-override=" + c.NodeName,
		"--v=1",
	}
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }

func waitSocket(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return kube.Poll(ctx, 50*time.Millisecond, func(context.Context) (bool, error) {
		conn, err := net.Dial("unix", path)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
}

// waitHTTP polls url until it answers 200. With files set it speaks TLS with the lab CA and the token.
func waitHTTP(ctx context.Context, url string, f *pki.Files, token string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	if f != nil {
		pem, err := os.ReadFile(f.CACert)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	var last string
	err := kube.Poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w (last: %.300s)", url, err, last)
	}
	return nil
}
