package host

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/thaw-dev/thaw/pkg/lab/proc"
)

// Snapshot is a comparable picture of the host parts the lab touches.
type Snapshot struct {
	IptablesChains []string          // user chains, non-ACCEPT built-in policies and rules, per table
	Sysctls        map[string]string // Sysctls' values
	Links          []string          // `ip -br link` names
	Routes         []string          // `ip route` lines
	Netns          []string
	Mounts         []string
	Dirs           map[string]bool
}

// Take records a snapshot.
func Take(ctx context.Context) Snapshot {
	s := Snapshot{Sysctls: map[string]string{}, Dirs: map[string]bool{}}
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		out, err := proc.Run(ctx, bin)
		if err != nil {
			continue
		}
		s.IptablesChains = append(s.IptablesChains, iptablesEntries(bin, out)...)
	}
	for _, k := range Sysctls {
		v, _ := ReadSysctl(k)
		s.Sysctls[k] = v
	}
	if out, err := proc.Run(ctx, "ip", "-br", "link"); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				s.Links = append(s.Links, f[0])
			}
		}
	}
	if out, err := proc.Run(ctx, "ip", "route"); err == nil {
		s.Routes = strings.Split(strings.TrimSpace(out), "\n")
	}
	s.Netns = listNetns()
	s.Mounts = Mounts()
	for _, d := range Dirs {
		_, err := os.Lstat(d)
		s.Dirs[d] = err == nil
	}
	sort.Strings(s.IptablesChains)
	sort.Strings(s.Links)
	sort.Strings(s.Routes)
	sort.Strings(s.Mounts)
	return s
}

// Diff lists the differences between two snapshots, one line each; empty means equal.
func Diff(before, after Snapshot) []string {
	var out []string
	out = append(out, diffList("iptables chain", before.IptablesChains, after.IptablesChains)...)
	out = append(out, diffList("link", before.Links, after.Links)...)
	out = append(out, diffList("route", before.Routes, after.Routes)...)
	out = append(out, diffList("netns", before.Netns, after.Netns)...)
	out = append(out, diffList("mount", before.Mounts, after.Mounts)...)
	keys := make([]string, 0, len(before.Sysctls))
	for k := range before.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if before.Sysctls[k] != after.Sysctls[k] {
			out = append(out, fmt.Sprintf("sysctl %s: %q -> %q", k, before.Sysctls[k], after.Sysctls[k]))
		}
	}
	for _, d := range Dirs {
		if before.Dirs[d] != after.Dirs[d] {
			out = append(out, fmt.Sprintf("dir %s: existed %v -> %v", d, before.Dirs[d], after.Dirs[d]))
		}
	}
	return out
}

func diffList(what string, a, b []string) []string {
	ca := map[string]int{}
	for _, x := range a {
		ca[x]++
	}
	cb := map[string]int{}
	for _, x := range b {
		cb[x]++
	}
	var out []string
	for _, x := range a {
		if cb[x] < ca[x] {
			out = append(out, fmt.Sprintf("%s gone: %s", what, x))
			cb[x]++
		}
	}
	for _, x := range b {
		if ca[x] < cb[x] {
			out = append(out, fmt.Sprintf("%s added: %s", what, x))
			ca[x]++
		}
	}
	return out
}

// iptablesEntries lists what matters of an iptables-save dump: user chains, built-in chains whose
// policy is not ACCEPT, and every rule. A table holding only empty ACCEPT built-in chains filters
// nothing, and the iptables-nft backend cannot delete one once any iptables command created it, so
// such tables compare equal to absent ones.
func iptablesEntries(bin, save string) []string {
	var out []string
	table := ""
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) >= 2 && f[1] != "ACCEPT" {
				out = append(out, bin+"/"+table+"/:"+f[0]+" "+f[1])
			}
		case strings.HasPrefix(line, "-A "):
			out = append(out, bin+"/"+table+"/"+line)
		}
	}
	return out
}
