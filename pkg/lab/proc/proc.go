// Package proc runs the lab's daemons detached from the thaw process: each one in its own session, with
// its output in a log file and its PID in a file, so that a later `thaw lab down` (another process) can
// find and stop exactly what `thaw lab up` started.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Manager owns the pid and log directories of one lab.
type Manager struct {
	PidDir string
	LogDir string
}

// Spec describes one daemon.
type Spec struct {
	Name string   // file stem for the pid and log files
	Path string   // absolute binary path
	Args []string // arguments after the binary
	Env  []string // extra environment (appended to the current one)
	Dir  string   // working directory; "" = log directory
}

// MergeEnv returns base with each KEY=value of extra replacing base's KEY (os.StartProcess passes
// duplicates through, and programs then read the first one).
func MergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	idx := map[string]int{}
	for _, kv := range append(append([]string{}, base...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// record is what the pid file holds: the pid and the binary, so that a reused pid is never signalled.
type record struct {
	pid  int
	path string
}

func (m *Manager) pidFile(name string) string { return filepath.Join(m.PidDir, name+".pid") }

// LogFile is where the daemon's stdout and stderr go.
func (m *Manager) LogFile(name string) string { return filepath.Join(m.LogDir, name+".log") }

// Start launches the daemon unless one recorded under that name is still alive. It reports whether it
// started a new process.
func (m *Manager) Start(s Spec) (bool, error) {
	if pid, ok := m.Alive(s.Name); ok && pid > 0 {
		return false, nil
	}
	if err := os.MkdirAll(m.PidDir, 0o755); err != nil {
		return false, err
	}
	if err := os.MkdirAll(m.LogDir, 0o755); err != nil {
		return false, err
	}
	logf, err := os.OpenFile(m.LogFile(s.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n==== %s start %s %s\n", time.Now().UTC().Format(time.RFC3339), s.Path, strings.Join(s.Args, " "))
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return false, err
	}
	defer devnull.Close()
	dir := s.Dir
	if dir == "" {
		dir = m.LogDir
	}
	// exec.Cmd is not used: its Wait would tie the daemon's lifetime to this process.
	attr := &os.ProcAttr{
		Dir:   dir,
		Env:   MergeEnv(os.Environ(), s.Env),
		Files: []*os.File{devnull, logf, logf},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	p, err := os.StartProcess(s.Path, append([]string{s.Path}, s.Args...), attr)
	if err != nil {
		return false, fmt.Errorf("start %s: %w", s.Name, err)
	}
	content := fmt.Sprintf("%d\n%s\n", p.Pid, s.Path)
	if err := os.WriteFile(m.pidFile(s.Name), []byte(content), 0o644); err != nil {
		_ = p.Kill()
		return false, err
	}
	// Release lets the daemon outlive us; init reaps it once this process exits.
	_ = p.Release()
	return true, nil
}

func (m *Manager) read(name string) (record, error) {
	b, err := os.ReadFile(m.pidFile(name))
	if err != nil {
		return record{}, err
	}
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return record{}, fmt.Errorf("pid file %s: bad pid %q", m.pidFile(name), lines[0])
	}
	r := record{pid: pid}
	if len(lines) > 1 {
		r.path = strings.TrimSpace(lines[1])
	}
	return r, nil
}

// matches tells whether pid still runs the recorded binary (not a zombie, not a reused pid).
func matches(r record) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	if r.path == "" {
		return true
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", r.pid))
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	return exe == r.path || filepath.Base(exe) == filepath.Base(r.path)
}

// Alive returns the recorded pid when that process still runs the recorded binary.
func (m *Manager) Alive(name string) (int, bool) {
	r, err := m.read(name)
	if err != nil {
		return 0, false
	}
	if !matches(r) {
		return r.pid, false
	}
	return r.pid, true
}

// Names lists the daemons that have pid files.
func (m *Manager) Names() []string {
	ents, _ := os.ReadDir(m.PidDir)
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".pid"); ok {
			out = append(out, n)
		}
	}
	return out
}

// Stop sends SIGTERM to the daemon's process group, waits up to grace, then SIGKILLs it. The pid file is
// removed once the process is gone. Stopping a daemon that is not running is not an error.
func (m *Manager) Stop(ctx context.Context, name string, grace time.Duration) error {
	r, err := m.read(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		_ = os.Remove(m.pidFile(name))
		return nil
	}
	if matches(r) {
		// The daemon leads its own session, so its pgid is its pid; signalling the group also reaches
		// helpers it forked (but not containerd shims, which start their own sessions).
		_ = syscall.Kill(-r.pid, syscall.SIGTERM)
		_ = syscall.Kill(r.pid, syscall.SIGTERM)
		if !waitGone(ctx, r, grace) {
			_ = syscall.Kill(-r.pid, syscall.SIGKILL)
			_ = syscall.Kill(r.pid, syscall.SIGKILL)
			if !waitGone(ctx, r, 5*time.Second) {
				return fmt.Errorf("%s (pid %d) did not exit", name, r.pid)
			}
		}
	}
	return os.Remove(m.pidFile(name))
}

func waitGone(ctx context.Context, r record, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !matches(r) {
			return true
		}
		select {
		case <-ctx.Done():
			return !matches(r)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return !matches(r)
}

// Tail returns up to n last lines of the daemon's log.
func (m *Manager) Tail(name string, n int) string {
	return TailFile(m.LogFile(name), n)
}

// TailFile returns up to n last lines of a file.
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Run runs a short command and returns its combined output, for the host plumbing (ip, iptables, ...).
func Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
