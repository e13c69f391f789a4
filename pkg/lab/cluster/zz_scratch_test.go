package cluster

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/pki"
)

func TestScratchControlPlane(t *testing.T) {
	if os.Getenv("LABB_SCRATCH") == "" {
		t.Skip()
	}
	c := DefaultConfig("/root/.cache/thaw/lab")
	bin := "/root/.cache/thaw/k8s-v1.35.4/bin/"
	l := New(c, Tools{Etcd: bin + "etcd", KubeAPIServer: bin + "kube-apiserver"}, os.Stdout)
	ctx := context.Background()
	for _, d := range []string{c.Dir, c.RunDir(), c.LogDir(), c.PidDir(), c.ConfDir()} {
		os.MkdirAll(d, 0o755)
	}
	if _, err := host.LoadOrRecord(c.StateFile()); err != nil {
		t.Fatal(err)
	}
	if err := host.SetupNetwork(ctx, l.Network()); err != nil {
		t.Fatal(err)
	}
	files, err := pki.Ensure(pki.Options{Dir: c.PKIDir(), NodeName: c.NodeName,
		IPs: []net.IP{net.ParseIP(c.BridgeIP), net.ParseIP(c.APIServerIP), net.ParseIP("127.0.0.1")}, DNSNames: []string{"kubernetes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.writeConfigs(files); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := l.start(Etcd, l.Tools.Etcd, l.etcdArgs()); err != nil {
		t.Fatal(err)
	}
	if err := waitHTTP(ctx, "http://127.0.0.1:2379/health", nil, "", 30*time.Second); err != nil {
		t.Fatal(l.fail(Etcd, err))
	}
	t.Logf("etcd %s", since(t0))
	if err := l.start(APIServer, l.Tools.KubeAPIServer, l.apiserverArgs(files)); err != nil {
		t.Fatal(err)
	}
	if err := waitHTTP(ctx, c.APIServerURL()+"/readyz", files, files.AdminToken, 90*time.Second); err != nil {
		t.Fatal(l.fail(APIServer, err))
	}
	t.Logf("apiserver %s", since(t0))
	cl, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := cl.Kube.Discovery().ServerVersion()
	t.Logf("version %v %v", v, err)
}

func TestScratchDown(t *testing.T) {
	if os.Getenv("LABB_SCRATCH") == "" {
		t.Skip()
	}
	c := DefaultConfig("/root/.cache/thaw/lab")
	bin := "/root/.cache/thaw/k8s-v1.35.4/bin/"
	l := New(c, Tools{Etcd: bin + "etcd", KubeAPIServer: bin + "kube-apiserver"}, os.Stdout)
	if err := l.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func scratchTools() Tools {
	bin := "/root/.cache/thaw/k8s-v1.35.4/bin/"
	cd := "/root/.cache/thaw/containerd-v2.2.9/bin/"
	return Tools{Etcd: bin + "etcd", KubeAPIServer: bin + "kube-apiserver", KubeControllerManager: bin + "kube-controller-manager",
		KubeScheduler: bin + "kube-scheduler", Kubelet: bin + "kubelet", KubeProxy: bin + "kube-proxy", Kubectl: bin + "kubectl",
		Containerd: cd + "containerd", ContainerdShim: cd + "containerd-shim-runc-v2", Ctr: cd + "ctr", Runc: "/usr/sbin/runc", CNIBinDir: "/usr/lib/cni"}
}

func TestScratchNode(t *testing.T) {
	if os.Getenv("LABB_SCRATCH") == "" {
		t.Skip()
	}
	c := DefaultConfig("/root/.cache/thaw/lab")
	c.PauseImage = "registry.k8s.io/pause:3.10"
	c.CoreDNSImage = "ko.local/coredns/coredns:v1.14.7"
	l := New(c, scratchTools(), os.Stdout)
	if err := l.StartNode(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestScratchDown2(t *testing.T) {
	if os.Getenv("LABB_SCRATCH") == "" {
		t.Skip()
	}
	c := DefaultConfig("/root/.cache/thaw/lab")
	l := New(c, scratchTools(), os.Stdout)
	if err := l.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestScratchRoundTrip(t *testing.T) {
	if os.Getenv("LABB_SCRATCH") == "" {
		t.Skip()
	}
	ctx := context.Background()
	before := host.Take(ctx)
	c := DefaultConfig("/root/.cache/thaw/lab")
	c.PauseImage = "registry.k8s.io/pause:3.10"
	l := New(c, scratchTools(), os.Stdout)
	if err := l.StartNode(ctx, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range host.Diff(before, host.Take(ctx)) {
		t.Error(d)
	}
}
