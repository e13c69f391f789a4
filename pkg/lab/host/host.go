// Package host owns the lab's footprint on the machine outside its cache: the bridge and its routes,
// sysctls, iptables chains, mounts, network namespaces and directories. Before changing anything it
// records the previous state in a state file, so that teardown restores exactly that and removes only
// what the lab created.
package host

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/thaw-dev/thaw/pkg/lab/proc"
)

// Network is the lab's addressing plan.
type Network struct {
	Bridge      string // e.g. thaw0
	BridgeCIDR  string // e.g. 10.88.0.1/16
	ServiceCIDR string // routed to the bridge, e.g. 10.96.0.0/16
}

// Sysctls the lab (or the kubelet, kube-proxy and CNI on its behalf) may change.
var Sysctls = []string{
	"vm.overcommit_memory",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
	"net.netfilter.nf_conntrack_tcp_be_liberal",
}

// Dirs the node's components write outside the cache. Only those absent before `up` are removed.
var Dirs = []string{
	"/var/lib/kubelet",
	"/var/log/pods",
	"/var/log/containers",
	"/var/lib/cni",
	"/opt/containerd",
	"/run/containerd",
	"/etc/cni/net.d",
	"/etc/cni",
	"/var/lib/containerd",
	"/etc/kubernetes",
	"/var/lib/kube-proxy",
}

// State is what the lab found before it changed the host.
type State struct {
	Sysctls     map[string]string `json:"sysctls"`     // value before up ("" = key absent)
	DirsExisted map[string]bool   `json:"dirsExisted"` // path → existed before up
	Netns       []string          `json:"netns"`       // network namespaces present before up
}

// Load reads the state file (an error wrapping os.ErrNotExist when there is none).
func Load(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return &s, nil
}

// LoadOrRecord reads the state file, or records the current host state into it when it does not exist
// (a second `up` must not record the lab's own changes as the baseline).
func LoadOrRecord(path string) (*State, error) {
	if b, err := os.ReadFile(path); err == nil {
		var s State
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("state file %s: %w", path, err)
		}
		return &s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	s := &State{Sysctls: map[string]string{}, DirsExisted: map[string]bool{}}
	for _, k := range Sysctls {
		v, _ := ReadSysctl(k)
		s.Sysctls[k] = v
	}
	for _, d := range Dirs {
		_, err := os.Lstat(d)
		s.DirsExisted[d] = err == nil
	}
	s.Netns = listNetns()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	return s, os.WriteFile(path, b, 0o644)
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// ReadSysctl returns the value of key, or "" and an error when the key does not exist.
func ReadSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteSysctl sets key to value.
func WriteSysctl(key, value string) error {
	return os.WriteFile(sysctlPath(key), []byte(value), 0o644)
}

// RestoreSysctls puts back every recorded value that differs now.
func (s *State) RestoreSysctls() []error {
	var errs []error
	keys := make([]string, 0, len(s.Sysctls))
	for k := range s.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := s.Sysctls[k]
		if want == "" {
			continue
		}
		if cur, err := ReadSysctl(k); err == nil && cur != want {
			if err := WriteSysctl(k, want); err != nil {
				errs = append(errs, fmt.Errorf("restore %s=%s: %w", k, want, err))
			}
		}
	}
	return errs
}

// SetupNetwork creates the bridge with its address, routes the service CIDR to it and enables forwarding
// (service traffic from pods is DNATed on the host and forwarded back to the bridge). Idempotent.
func SetupNetwork(ctx context.Context, n Network) error {
	if _, err := os.Stat("/sys/class/net/" + n.Bridge); err != nil {
		if _, err := proc.Run(ctx, "ip", "link", "add", n.Bridge, "type", "bridge"); err != nil {
			return err
		}
	}
	out, _ := proc.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", n.Bridge)
	if !strings.Contains(out, " "+n.BridgeCIDR+" ") {
		if _, err := proc.Run(ctx, "ip", "addr", "add", n.BridgeCIDR, "dev", n.Bridge); err != nil {
			return err
		}
	}
	if _, err := proc.Run(ctx, "ip", "link", "set", n.Bridge, "up"); err != nil {
		return err
	}
	if _, err := proc.Run(ctx, "ip", "route", "replace", n.ServiceCIDR, "dev", n.Bridge); err != nil {
		return err
	}
	return WriteSysctl("net.ipv4.ip_forward", "1")
}

// TeardownNetwork deletes the service route, the veths attached to the bridge and the bridge.
func TeardownNetwork(ctx context.Context, n Network) []error {
	var errs []error
	_, _ = proc.Run(ctx, "ip", "route", "del", n.ServiceCIDR, "dev", n.Bridge)
	ents, _ := os.ReadDir("/sys/class/net/" + n.Bridge + "/brif")
	for _, e := range ents {
		// A veth goes away by itself once its pod's namespace is gone.
		if _, err := proc.Run(ctx, "ip", "link", "del", e.Name()); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat("/sys/class/net/" + n.Bridge); err == nil {
		if _, err := proc.Run(ctx, "ip", "link", "del", n.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func listNetns() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// CleanupNetns removes network namespaces under dirs that the CNI/containerd created (names starting
// with "cni-") and that did not exist before the lab started.
func (s *State) CleanupNetns(dirs ...string) []error {
	before := map[string]bool{}
	for _, n := range s.Netns {
		before[n] = true
	}
	var errs []error
	for _, dir := range dirs {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "cni-") || (dir == "/run/netns" && before[e.Name()]) {
				continue
			}
			p := filepath.Join(dir, e.Name())
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// Mounts returns the mount points, from /proc/self/mountinfo, in order of appearance.
func Mounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// UnmountUnder lazily unmounts every mount point at or below any of prefixes, deepest first.
func UnmountUnder(prefixes ...string) []error {
	var errs []error
	for pass := 0; pass < 3; pass++ {
		ms := Mounts()
		var todo []string
		for _, m := range ms {
			for _, p := range prefixes {
				p = strings.TrimSuffix(p, "/")
				if p != "" && (m == p || strings.HasPrefix(m, p+"/")) {
					todo = append(todo, m)
					break
				}
			}
		}
		if len(todo) == 0 {
			return nil
		}
		// Deepest (and, for stacked mounts, last mounted) first.
		sort.SliceStable(todo, func(i, j int) bool { return len(todo[i]) > len(todo[j]) })
		errs = errs[:0]
		for _, m := range todo {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("umount %s: %w", m, err))
			}
		}
	}
	return errs
}

// RemoveCreatedDirs removes the directories that did not exist before `up`, after unmounting below them.
func (s *State) RemoveCreatedDirs() []error {
	var errs []error
	for _, d := range Dirs {
		existed, known := s.DirsExisted[d]
		if !known || existed {
			continue
		}
		errs = append(errs, UnmountUnder(d)...)
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// CleanupIptables flushes and deletes the chains the lab's components add (KUBE-*, CNI-*) in every table,
// after removing the jumps to them from the built-in chains.
func CleanupIptables(ctx context.Context) []error {
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		save, err := proc.Run(ctx, bin+"-save")
		if err != nil {
			continue
		}
		for table, chains := range labChains(save) {
			if len(chains) == 0 {
				continue
			}
			// Delete rules jumping to our chains from any chain (built-in ones included).
			for _, rule := range jumpRules(save, table) {
				args := append([]string{"-w", "-t", table, "-D"}, rule...)
				_, _ = proc.Run(ctx, bin, args...)
			}
			for _, c := range chains {
				_, _ = proc.Run(ctx, bin, "-w", "-t", table, "-F", c)
			}
			for _, c := range chains {
				if _, err := proc.Run(ctx, bin, "-w", "-t", table, "-X", c); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errs
}

func isLabChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "CNI-")
}

// labChains parses iptables-save output into table → lab chains.
func labChains(save string) map[string][]string {
	out := map[string][]string{}
	table := ""
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			out[table] = nil
		case strings.HasPrefix(line, ":"):
			name := strings.Fields(line[1:])[0]
			if isLabChain(name) {
				out[table] = append(out[table], name)
			}
		}
	}
	return out
}

// jumpRules returns, for table, the rule specs (chain first) of non-lab chains that jump to lab chains.
func jumpRules(save, table string) [][]string {
	var out [][]string
	cur := ""
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "*") {
			cur = line[1:]
			continue
		}
		if cur != table || !strings.HasPrefix(line, "-A ") {
			continue
		}
		f := splitRule(line[3:])
		if len(f) == 0 || isLabChain(f[0]) {
			continue
		}
		for i := 0; i+1 < len(f); i++ {
			if (f[i] == "-j" || f[i] == "-g") && isLabChain(f[i+1]) {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// splitRule splits an iptables-save rule, honouring double quotes (comments).
func splitRule(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && inQ && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQ = !inQ
			have = true
		case c == ' ' && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// ServiceProgrammed tells whether kube-proxy's iptables rules send clusterIP:port to endpoints (a
// KUBE-SVC chain), from the nat table.
func ServiceProgrammed(ctx context.Context, clusterIP string, port int32) (bool, error) {
	out, err := proc.Run(ctx, "iptables-save", "-t", "nat")
	if err != nil {
		return false, err
	}
	return serviceInNat(out, clusterIP, port), nil
}

func serviceInNat(save, clusterIP string, port int32) bool {
	dst := "-d " + clusterIP + "/32 "
	dport := fmt.Sprintf("--dport %d ", port)
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "-A KUBE-SERVICES ") && strings.Contains(line, dst) &&
			strings.Contains(line+" ", dport) && strings.Contains(line, "-j KUBE-SVC-") {
			return true
		}
	}
	return false
}
