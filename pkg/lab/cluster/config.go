// Package cluster runs the lab's single-node Kubernetes: the bridge, certificates, etcd, the control
// plane, containerd, the kubelet, kube-proxy and CoreDNS, as detached daemons whose state lives under
// one directory, and tears all of it down again leaving the host as it was.
package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Tools are the binaries the lab runs (absolute paths).
type Tools struct {
	Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler, Kubelet, KubeProxy, Kubectl string
	Containerd, ContainerdShim, Ctr, Runc                                                  string
	CNIBinDir                                                                              string
}

// Config is the lab's addressing and layout. DefaultConfig fills it.
type Config struct {
	Dir           string // lab state root, e.g. $THAW_CACHE/lab
	NodeName      string
	Bridge        string
	BridgeIP      string // 10.88.0.1
	BridgePrefix  int    // 16
	PodRangeStart string // host-local range within the bridge subnet
	PodRangeEnd   string
	PodCIDR       string // the range as a CIDR, for kube-proxy
	ServiceCIDR   string
	APIServerIP   string // first service IP, 10.96.0.1
	DNSServiceIP  string
	ClusterDomain string
	PauseImage    string
	CoreDNSImage  string
	Verbose       bool
}

// DefaultConfig returns the lab's standard layout under dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:           dir,
		NodeName:      "thaw-node",
		Bridge:        "thaw0",
		BridgeIP:      "10.88.0.1",
		BridgePrefix:  16,
		PodRangeStart: "10.88.1.2",
		PodRangeEnd:   "10.88.1.254",
		PodCIDR:       "10.88.1.0/24",
		ServiceCIDR:   "10.96.0.0/16",
		APIServerIP:   "10.96.0.1",
		DNSServiceIP:  "10.96.0.10",
		ClusterDomain: "cluster.local",
	}
}

// Paths under Config.Dir. Everything below run/ is runtime state wiped by Down; pki/, etcd data and the
// containerd root (images) survive so that a second `up` is fast.
func (c Config) path(p ...string) string { return filepath.Join(append([]string{c.Dir}, p...)...) }

func (c Config) LogDir() string          { return c.path("logs") }
func (c Config) PidDir() string          { return c.path("pids") }
func (c Config) PKIDir() string          { return c.path("pki") }
func (c Config) StateFile() string       { return c.path("host-state.json") }
func (c Config) Kubeconfig() string      { return c.path("kubeconfig") }
func (c Config) RunDir() string          { return c.path("run") }
func (c Config) EtcdDir() string         { return c.path("run", "etcd") }
func (c Config) ContainerdRoot() string  { return c.path("containerd") }
func (c Config) ContainerdState() string { return c.path("run", "containerd") }
func (c Config) ContainerdSock() string  { return c.path("run", "containerd", "containerd.sock") }
func (c Config) KubeletDir() string      { return c.path("run", "kubelet") }
func (c Config) PodLogsDir() string      { return c.path("run", "pods") }
func (c Config) CNIConfDir() string      { return c.path("run", "cni", "net.d") }
func (c Config) CNIDataDir() string      { return c.path("run", "cni", "networks") }
func (c Config) ConfDir() string         { return c.path("run", "conf") }
func (c Config) APIServerURL() string    { return "https://" + c.BridgeIP + ":6443" }
func (c Config) BridgeCIDR() string      { return fmt.Sprintf("%s/%d", c.BridgeIP, c.BridgePrefix) }

// bridgeSubnet is the network of the bridge address, e.g. 10.88.0.0/16.
func (c Config) bridgeSubnet() string {
	_, n, err := net.ParseCIDR(c.BridgeCIDR())
	if err != nil {
		return c.BridgeCIDR()
	}
	return n.String()
}

func (c Config) containerdConfig(t Tools) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return strings.TrimLeft(`
version = 3
root = `+q(c.ContainerdRoot())+`
state = `+q(c.ContainerdState())+`

[grpc]
  address = `+q(c.ContainerdSock())+`

[ttrpc]
  address = `+q(c.ContainerdSock()+".ttrpc")+`

[debug]
  address = `+q(filepath.Join(c.ContainerdState(), "debug.sock"))+`

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = `+q(c.path("run", "containerd-opt"))+`
  [plugins."io.containerd.nri.v1.nri"]
    disable = true
    socket_path = `+q(filepath.Join(c.ContainerdState(), "nri.sock"))+`
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = `+q(c.PauseImage)+`
  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    # The VM withholds CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below containerd's own.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []
    enable_cdi = false
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          BinaryName = `+q(t.Runc)+`
          Root = `+q(filepath.Join(c.ContainerdState(), "runc"))+`
          SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = [`+q(t.CNIBinDir)+`]
      conf_dir = `+q(c.CNIConfDir())+`
      max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`, "\n")
}

func (c Config) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "thaw",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, c.Bridge, c.CNIDataDir(), c.bridgeSubnet(), c.PodRangeStart, c.PodRangeEnd, c.BridgeIP)
}

func (c Config) kubeletConfig() string {
	pki := c.PKIDir()
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The host is cgroup v1, which kubelet 1.35+ refuses by default.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
clusterDNS: [%s]
clusterDomain: %s
resolvConf: %s
# Fast reaction to pod and config changes.
syncFrequency: 10s
fileCheckFrequency: 10s
httpCheckFrequency: 10s
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 1m
# Never garbage-collect the imported images: they cannot be pulled again.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
serializeImagePulls: false
maxPods: 250
`, c.ContainerdSock(), c.PodLogsDir(), c.BridgeIP,
		filepath.Join(pki, "kubelet.crt"), filepath.Join(pki, "kubelet.key"), filepath.Join(pki, "ca.crt"),
		c.DNSServiceIP, c.ClusterDomain, c.path("run", "conf", "resolv.conf"))
}

func (c Config) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
bindAddress: %s
healthzBindAddress: %s:10256
metricsBindAddress: %s:10249
hostnameOverride: %s
clusterCIDR: %s
nodePortAddresses: ["%s/32"]
clientConnection:
  kubeconfig: %s
# Zero conntrack settings leave the host's sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  minSyncPeriod: 0s
  syncPeriod: 30s
`, c.BridgeIP, c.BridgeIP, c.BridgeIP, c.NodeName, c.PodCIDR, c.BridgeIP, c.kubeconfigFor("kube-proxy"))
}

func (c Config) kubeconfigFor(component string) string {
	return filepath.Join(c.PKIDir(), component+".kubeconfig")
}

// writeFile writes content unless the file already holds it: kube-proxy exits when its config file
// is written to, even with the same bytes, so a second `up` must leave it alone.
func writeFile(path, content string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}
