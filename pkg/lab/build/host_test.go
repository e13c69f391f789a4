package build

import (
	"context"
	"os"
	"testing"
)

// TestEnsureOnHost runs Ensure for real against the cache, printing its progress. It is opt-in:
// THAW_LAB_BUILD=packages installs the host packages only; THAW_LAB_BUILD=all builds everything
// (a cold run takes many minutes: use -timeout 60m).
func TestEnsureOnHost(t *testing.T) {
	mode := os.Getenv("THAW_LAB_BUILD")
	if mode == "" {
		t.Skip("set THAW_LAB_BUILD=packages or all")
	}
	opts := Options{Out: os.Stdout, SkipTools: mode == "packages", SkipLocal: mode == "packages"}
	p, err := Ensure(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Runc == "" || p.CNIBinDir == "" || p.Iptables == "" || p.Conntrack == "" || p.IP == "" {
		t.Fatalf("host packages missing from paths: %+v", p)
	}
	if mode != "all" {
		return
	}
	for _, f := range append([]string{p.Etcd, p.KubeAPIServer, p.KubeControllerManager, p.KubeScheduler, p.Kubelet,
		p.KubeProxy, p.Kubectl, p.Containerd, p.ContainerdShim, p.Ctr, p.CoreDNS, p.Pause}, values(p.Knative)...) {
		if fi, err := os.Stat(f); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s: not an executable (%v)", f, err)
		}
	}
	t.Logf("thaw: %v skipped: %v apps: %v", p.Thaw, p.ThawSkipped, p.Apps)
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
