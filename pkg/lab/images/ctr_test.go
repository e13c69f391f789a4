package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/lab/build"
)

// startContainerd runs the cached containerd on a private root, state and socket, with the CRI and
// NRI plugins off, for the test's lifetime. It skips unless root and containerd is built.
func startContainerd(t *testing.T) (ctrPath, address string) {
	t.Helper()
	testutil.NeedRoot(t, "containerd")
	cache, err := build.DefaultCacheDir()
	if err != nil {
		testutil.SkipOutsideCI(t, "%v", err)
	}
	bin := filepath.Join(cache, "containerd-"+build.ContainerdVersion, "bin")
	containerd, ctr := filepath.Join(bin, "containerd"), filepath.Join(bin, "ctr")
	for _, f := range []string{containerd, ctr} {
		if _, err := os.Stat(f); err != nil {
			testutil.SkipOutsideCI(t, "containerd not built (thaw lab up builds it): %v", err)
		}
	}
	// containerd always creates its default state directory (shim sockets and fifos are hard-wired
	// there); remove it afterwards if this test made it.
	const defaultState = "/run/containerd"
	_, statErr := os.Stat(defaultState)
	madeDefaultState := os.IsNotExist(statErr)
	dir, err := os.MkdirTemp("", "thaw-ctr-")
	if err != nil {
		t.Fatal(err)
	}
	address = filepath.Join(dir, "sock")
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), address, address+".ttrpc", filepath.Join(dir, "opt"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(containerd, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			if data, err := os.ReadFile(filepath.Join(dir, "log")); err == nil {
				t.Logf("containerd log:\n%s", data)
			}
		}
		// Unpacked snapshots are plain directories; unmount anything left before removing them.
		if mounts, err := os.ReadFile("/proc/self/mounts"); err == nil {
			for _, line := range strings.Split(string(mounts), "\n") {
				if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir) {
					_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
				}
			}
		}
		os.RemoveAll(dir)
		if madeDefaultState {
			_ = os.Remove(defaultState) // only if still empty
		}
	})
	// containerd has no readiness signal but its socket answering.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := exec.Command(ctr, "--address", address, "version").Run(); err == nil {
			return ctr, address
		}
		select {
		case <-exited:
			t.Fatal("containerd exited")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd did not answer within 20s")
		}
	}
}

// TestImportIntoContainerd imports built images into a real containerd and checks the names, the
// skip of unchanged images, and Tag.
func TestImportIntoContainerd(t *testing.T) {
	ctrPath, address := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir := t.TempDir()
	var refs []ImageRef
	for _, n := range []string{"one", "two"} {
		ref, err := Build(Spec{Name: AppImage(n), Binary: fakeStatic(t, dir, n, n)}, filepath.Join(dir, "out"))
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	refs = append(refs, ImageRef{Name: ThawImage("activator"), Skipped: "not built"})

	var out strings.Builder
	if err := ImportAll(ctx, ctrPath, address, refs, &out); err != nil {
		t.Fatal(err)
	}
	have, err := List(ctx, ctrPath, address)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs[:2] {
		if have[r.Name] == "" {
			t.Errorf("%s not in containerd after import: %v", r.Name, have)
		}
	}
	if strings.Count(out.String(), "imported in") != 2 || !strings.Contains(out.String(), "skipped") {
		t.Errorf("first import output:\n%s", out.String())
	}

	out.Reset()
	if err := ImportAll(ctx, ctrPath, address, refs, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "already imported") != 2 {
		t.Errorf("second import did not skip:\n%s", out.String())
	}

	// A rebuilt image under the same name is imported again.
	fakeStatic(t, dir, "one", "changed")
	changed, err := Build(Spec{Name: AppImage("one"), Binary: filepath.Join(dir, "one")}, filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := ImportAll(ctx, ctrPath, address, []ImageRef{changed}, &out); err != nil {
		t.Fatal(err)
	}
	after, _ := List(ctx, ctrPath, address)
	if !strings.Contains(out.String(), "imported in") || after[changed.Name] == have[changed.Name] {
		t.Errorf("changed image: %s (digest %s → %s)", out.String(), have[changed.Name], after[changed.Name])
	}

	if err := Tag(ctx, ctrPath, address, AppImage("two"), "ko.local/retagged/two:v1"); err != nil {
		t.Fatal(err)
	}
	after, _ = List(ctx, ctrPath, address)
	if after["ko.local/retagged/two:v1"] != after[AppImage("two")] {
		t.Errorf("tag: %v", after)
	}
	if err := Import(ctx, ctrPath, address, filepath.Join(dir, "missing.tar")); err == nil {
		t.Error("import of a missing tarball: no error")
	}
}

// TestBuildAllOnHost images the real binaries of an earlier build.Ensure and imports them into a
// private containerd, printing the times. Opt-in: THAW_LAB_IMAGES=1.
func TestBuildAllOnHost(t *testing.T) {
	if os.Getenv("THAW_LAB_IMAGES") == "" {
		t.Skip("set THAW_LAB_IMAGES=1")
	}
	ctrPath, address := startContainerd(t)
	ctx := context.Background()
	p, err := build.Ensure(ctx, build.Options{NoInstall: true, SkipTools: true, SkipLocal: true})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for _, pass := range []string{"cold", "warm"} {
		start := time.Now()
		refs, err := BuildAll(ctx, p, out)
		if err != nil {
			t.Fatal(err)
		}
		built := 0
		for _, r := range refs {
			if r.Built {
				built++
			}
		}
		t.Logf("%s BuildAll: %d images (%d built) in %s", pass, len(refs), built, time.Since(start).Round(time.Millisecond))
		start = time.Now()
		var log strings.Builder
		if err := ImportAll(ctx, ctrPath, address, refs, &log); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s ImportAll in %s:\n%s", pass, time.Since(start).Round(time.Millisecond), log.String())
	}
}
