package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/pkg/lab/proc"
)

// Ingress is the daemon name of the lab's ingress proxy (started by the caller of StartNode).
const Ingress = "ingress"

// Down stops every daemon and pod of the lab and restores the host as recorded before the first `up`.
// It keeps going past errors and returns them all; running it twice is harmless.
func (l *Lab) Down(ctx context.Context) error {
	c := l.Cfg
	t0 := time.Now()
	var errs []error
	add := func(es ...error) {
		for _, e := range es {
			if e != nil {
				errs = append(errs, e)
			}
		}
	}
	stop := func(names []string, grace time.Duration) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, n := range names {
			wg.Go(func() {
				err := l.Procs.Stop(ctx, n, grace)
				mu.Lock()
				add(err)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	// Whatever else was started next to the cluster (the ingress, anything recorded in pids/).
	var extra []string
	for _, n := range l.Procs.Names() {
		if !contains(Daemons, n) {
			extra = append(extra, n)
		}
	}
	// The kubelet first, so that it does not restart what is being removed; the apiserver goes with it
	// (the lab's etcd data is discarded, so it need not drain).
	stop(append(extra, Kubelet, KubeProxy, ControllerManager, Scheduler, APIServer), 3*time.Second)
	l.logf("control plane and node agents stopped (%s)", since(t0))

	add(l.removeContainers(ctx)...)
	stop([]string{Containerd}, 5*time.Second)
	add(l.killStrays()...)
	stop([]string{Etcd}, 5*time.Second)
	l.logf("containers and daemons stopped (%s)", since(t0))

	// kube-proxy removes its own chains; whatever is left (KUBE-* from the kubelet, CNI-*) goes next.
	if l.Tools.KubeProxy != "" {
		if _, err := os.Stat(l.Tools.KubeProxy); err == nil {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			_, _ = proc.Run(cctx, l.Tools.KubeProxy, "--cleanup", "--v=0")
			cancel()
		}
	}
	add(host.CleanupIptables(ctx)...)

	add(host.UnmountUnder(c.RunDir(), c.ContainerdRoot(), "/run/containerd", "/var/lib/kubelet")...)
	st, err := host.Load(c.StateFile())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		add(err)
	}
	if st != nil {
		add(st.CleanupNetns("/run/netns", filepath.Join(c.ContainerdState(), "netns"))...)
	}
	add(removeCgroups()...)
	add(host.TeardownNetwork(ctx, l.Network())...)
	if st != nil {
		add(st.RestoreSysctls()...)
		add(st.RemoveCreatedDirs()...)
	}
	if err := os.RemoveAll(c.RunDir()); err != nil {
		add(err)
	}
	if len(errs) == 0 {
		// The next `up` records a fresh baseline.
		if err := os.Remove(c.StateFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
			add(err)
		}
	}
	l.logf("down in %s", since(t0))
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// removeContainers kills and deletes every container containerd runs for the CRI, so the next start
// finds an empty metadata store (images stay).
func (l *Lab) removeContainers(ctx context.Context) []error {
	if _, ok := l.Procs.Alive(Containerd); !ok || l.Tools.Ctr == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ctr := func(args ...string) (string, error) {
		return proc.Run(ctx, l.Tools.Ctr, append([]string{"--address", l.Cfg.ContainerdSock(), "--namespace", "k8s.io"}, args...)...)
	}
	out, err := ctr("tasks", "ls", "-q")
	if err != nil {
		return []error{err}
	}
	tasks := strings.Fields(out)
	for _, id := range tasks {
		_, _ = ctr("tasks", "kill", "--all", "--signal", "SIGKILL", id)
	}
	for _, id := range tasks {
		_, _ = ctr("tasks", "delete", "--force", id)
	}
	if out, err := ctr("containers", "ls", "-q"); err == nil {
		if ids := strings.Fields(out); len(ids) > 0 {
			_, _ = ctr(append([]string{"containers", "delete"}, ids...)...)
		}
	}
	if out, err := ctr("sandboxes", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = ctr("sandboxes", "rm", "--force", id)
		}
	}
	return nil
}

// killStrays kills what outlived containerd: container processes left in the kubelet's cgroups and the
// runc shims this lab's containerd started (each identified by its binary and our socket).
func (l *Lab) killStrays() []error {
	var errs []error
	pids := map[int]bool{}
	for _, f := range cgroupProcs() {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(s); err == nil && p > 0 {
				pids[p] = true
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p))
		if l.Tools.ContainerdShim == "" || strings.TrimSuffix(exe, " (deleted)") != l.Tools.ContainerdShim {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if strings.Contains(string(cmd), l.Cfg.ContainerdSock()) {
			pids[p] = true
		}
	}
	for p := range pids {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", p, err))
		}
	}
	if len(pids) > 0 {
		time.Sleep(200 * time.Millisecond) // let the kernel reap before cgroups are removed
	}
	return errs
}

// kubeletCgroups are the cgroup roots the kubelet creates with the cgroupfs driver.
var kubeletCgroups = []string{"kubepods", "kubepods.slice"}

func cgroupDirs() []string {
	var out []string
	ctrls, _ := os.ReadDir("/sys/fs/cgroup")
	for _, c := range ctrls {
		for _, k := range kubeletCgroups {
			p := filepath.Join("/sys/fs/cgroup", c.Name(), k)
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				out = append(out, p)
			}
		}
	}
	for _, k := range kubeletCgroups {
		p := filepath.Join("/sys/fs/cgroup", k)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

func cgroupProcs() []string {
	var out []string
	for _, root := range cgroupDirs() {
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, filepath.Join(p, "cgroup.procs"))
			}
			return nil
		})
	}
	return out
}

// removeCgroups removes the kubelet's cgroup trees, deepest first.
func removeCgroups() []error {
	var errs []error
	for _, root := range cgroupDirs() {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
			}
		}
	}
	return errs
}
