package build

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// hostPackage is a Debian package the node needs, found by one of its files.
type hostPackage struct {
	deb        string
	candidates []string // the first existing one is used
	set        func(p *Paths, path string)
}

func hostPackages() []hostPackage {
	sbin := func(name string) []string {
		return []string{"/usr/sbin/" + name, "/usr/bin/" + name, "/sbin/" + name, "/bin/" + name}
	}
	return []hostPackage{
		{"runc", sbin("runc"), func(p *Paths, s string) { p.Runc = s }},
		{"iptables", sbin("iptables"), func(p *Paths, s string) { p.Iptables = s }},
		{"conntrack", sbin("conntrack"), func(p *Paths, s string) { p.Conntrack = s }},
		{"iproute2", sbin("ip"), func(p *Paths, s string) { p.IP = s }},
		// Debian installs the CNI plugins under /usr/lib/cni; /opt/cni/bin is the upstream layout.
		{"containernetworking-plugins", []string{"/usr/lib/cni/bridge", "/opt/cni/bin/bridge"},
			func(p *Paths, s string) { p.CNIBinDir = filepath.Dir(s) }},
	}
}

// findHostPackages fills the paths of installed packages and returns the Debian names of missing ones.
func findHostPackages(p *Paths) (missing []string) {
	for _, hp := range hostPackages() {
		found := false
		for _, c := range hp.candidates {
			if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
				hp.set(p, c)
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, hp.deb)
		}
	}
	return missing
}

// ensurePackages installs missing host packages with apt-get (update once, then install).
func (b *builder) ensurePackages(ctx context.Context, p *Paths) error {
	missing := findHostPackages(p)
	if len(missing) == 0 {
		b.logf("build: %-24s present", "host packages")
		return nil
	}
	if b.opts.NoInstall {
		return fmt.Errorf("%w: %s (apt-get install %s)", ErrMissingPackages, strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s missing; installing them needs root", strings.Join(missing, ", "))
	}
	start := time.Now()
	b.logf("build: %-24s installing %s...", "host packages", strings.Join(missing, " "))
	// Another process may hold the dpkg lock for a while; wait for it rather than fail.
	lock := []string{"-o", "DPkg::Lock::Timeout=300"}
	if err := b.apt(ctx, append(append([]string{}, lock...), "update")...); err != nil {
		return err
	}
	args := append(append([]string{}, lock...), "install", "-y", "--no-install-recommends")
	if err := b.apt(ctx, append(args, missing...)...); err != nil {
		return err
	}
	if still := findHostPackages(p); len(still) > 0 {
		return fmt.Errorf("%w after apt-get install: %s", ErrMissingPackages, strings.Join(still, ", "))
	}
	b.logf("build: %-24s installed in %s", "host packages", since(start))
	return nil
}

func (b *builder) apt(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tail(buf.String(), 20))
	}
	return nil
}
