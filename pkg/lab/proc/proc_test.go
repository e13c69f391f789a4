package proc

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"A=1", "PATH=/bin", "B=2"}, []string{"PATH=/x:/bin", "C=3"})
	want := []string{"A=1", "PATH=/x:/bin", "B=2", "C=3"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MergeEnv = %v, want %v", got, want)
	}
}

func TestStartStopDetached(t *testing.T) {
	sleep := "/bin/sleep"
	if _, err := os.Stat(sleep); err != nil {
		t.Skip("no /bin/sleep")
	}
	dir := t.TempDir()
	m := &Manager{PidDir: filepath.Join(dir, "pids"), LogDir: filepath.Join(dir, "logs")}
	started, err := m.Start(Spec{Name: "s", Path: sleep, Args: []string{"60"}})
	if err != nil || !started {
		t.Fatalf("Start = %v, %v", started, err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background(), "s", time.Second) })
	pid, ok := m.Alive("s")
	if !ok {
		t.Fatal("not alive after start")
	}
	// A second start keeps the running one.
	if again, err := m.Start(Spec{Name: "s", Path: sleep, Args: []string{"60"}}); err != nil || again {
		t.Fatalf("second Start = %v, %v", again, err)
	}
	if p2, _ := m.Alive("s"); p2 != pid {
		t.Fatalf("pid changed %d -> %d", pid, p2)
	}
	if got := m.Names(); !reflect.DeepEqual(got, []string{"s"}) {
		t.Fatalf("Names = %v", got)
	}
	if err := m.Stop(context.Background(), "s", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Alive("s"); ok {
		t.Fatal("alive after stop")
	}
	if err := m.Stop(context.Background(), "s", time.Second); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if !strings.Contains(m.Tail("s", 5), "start "+sleep) {
		t.Errorf("log lacks start line: %q", m.Tail("s", 5))
	}
}

func TestAliveRejectsForeignPid(t *testing.T) {
	dir := t.TempDir()
	m := &Manager{PidDir: dir, LogDir: dir}
	// Our own pid, recorded with another binary: must not count as the daemon.
	if err := os.WriteFile(filepath.Join(dir, "x.pid"), []byte(strings.Join([]string{strconv.Itoa(os.Getpid()), "/nonexistent/bin"}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Alive("x"); ok {
		t.Fatal("foreign process taken for the daemon")
	}
}
