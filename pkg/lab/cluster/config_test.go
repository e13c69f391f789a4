package cluster

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func testConfig() Config {
	c := DefaultConfig("/cache/lab")
	c.PauseImage = "registry.k8s.io/pause:3.10"
	c.CoreDNSImage = "ko.local/coredns/coredns:v1"
	return c
}

func TestKubeletConfig(t *testing.T) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(testConfig().kubeletConfig()), &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"failCgroupV1": false, "cgroupDriver": "cgroupfs", "failSwapOn": false, "address": "10.88.0.1",
		"clusterDomain": "cluster.local", "podLogsDir": "/cache/lab/run/pods", "imageGCHighThresholdPercent": float64(100),
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	if dns, _ := m["clusterDNS"].([]any); len(dns) != 1 || dns[0] != "10.96.0.10" {
		t.Errorf("clusterDNS = %v", m["clusterDNS"])
	}
}

func TestKubeProxyConfig(t *testing.T) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(testConfig().kubeProxyConfig()), &m); err != nil {
		t.Fatal(err)
	}
	if m["mode"] != "iptables" || m["bindAddress"] != "10.88.0.1" {
		t.Errorf("kube-proxy config: %v", m)
	}
	ct, _ := m["conntrack"].(map[string]any)
	if ct["maxPerCore"] != float64(0) {
		t.Errorf("conntrack must leave sysctls alone: %v", ct)
	}
}

func TestCNIConfig(t *testing.T) {
	var m struct {
		Plugins []struct {
			Type   string
			Bridge string
			IPMasq bool
			IPAM   struct {
				Type   string
				Ranges [][]map[string]string
			}
		}
	}
	if err := json.Unmarshal([]byte(testConfig().cniConfig()), &m); err != nil {
		t.Fatal(err)
	}
	p := m.Plugins[0]
	if p.Type != "bridge" || p.Bridge != "thaw0" || p.IPMasq || p.IPAM.Type != "host-local" {
		t.Fatalf("plugin: %+v", p)
	}
	r := p.IPAM.Ranges[0][0]
	if r["subnet"] != "10.88.0.0/16" || r["gateway"] != "10.88.0.1" || !strings.HasPrefix(r["rangeStart"], "10.88.1.") {
		t.Fatalf("range: %v", r)
	}
}

func TestContainerdConfig(t *testing.T) {
	s := testConfig().containerdConfig(Tools{Runc: "/usr/sbin/runc", CNIBinDir: "/usr/lib/cni"})
	for _, want := range []string{
		"version = 3",
		"restrict_oom_score_adj = true",
		`sandbox = "registry.k8s.io/pause:3.10"`,
		`BinaryName = "/usr/sbin/runc"`,
		`bin_dirs = ["/usr/lib/cni"]`,
		`conf_dir = "/cache/lab/run/cni/net.d"`,
		`state = "/cache/lab/run/containerd"`,
		"netns_mounts_under_state_dir = true",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("containerd config lacks %q", want)
		}
	}
}

func TestCoreDNSManifest(t *testing.T) {
	s := testConfig().coreDNSManifest()
	for _, want := range []string{"clusterIP: 10.96.0.10", "kubernetes cluster.local", "image: ko.local/coredns/coredns:v1"} {
		if !strings.Contains(s, want) {
			t.Errorf("CoreDNS manifest lacks %q", want)
		}
	}
	if strings.Contains(s, "forward") {
		t.Error("CoreDNS must not forward: the lab has no upstream resolver")
	}
}
