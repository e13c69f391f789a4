package build

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeGo writes a go command that logs each call and "builds" by writing the -o file. A package path
// containing $FAKE_GO_FAIL fails to compile.
func fakeGo(t *testing.T) (goCmd, logPath string) {
	t.Helper()
	dir := t.TempDir()
	logPath = filepath.Join(dir, "calls")
	goCmd = filepath.Join(dir, "go")
	script := `#!/bin/bash
echo "$PWD|CGO_ENABLED=$CGO_ENABLED|$*" >> "` + logPath + `"
if [ "$1" = env ]; then echo go1.99.0; exit 0; fi
out=""; prev=""
for a in "$@"; do
  if [ "$prev" = "-o" ]; then out="$a"; fi
  prev="$a"
done
pkg="${@: -1}"
if [ -n "$FAKE_GO_FAIL" ] && [[ "$pkg" == *"$FAKE_GO_FAIL"* ]]; then
  echo "# $pkg"; echo "main.go:1: boom"; exit 1
fi
if [[ "$out" == */ ]]; then out="$out$(basename "$pkg")"; fi
printf 'binary of %s' "$pkg" > "$out"
`
	if err := os.WriteFile(goCmd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_GO_FAIL", "")
	return goCmd, logPath
}

func calls(t *testing.T, logPath string) []string {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l != "" && !strings.Contains(l, "|env ") {
			out = append(out, l)
		}
	}
	os.Remove(logPath)
	return out
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeRepo lays out a checkout with the tools modules (content only matters for the stamps).
func fakeRepo(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write(t, filepath.Join(root, "go.mod"), "module "+mainModule+"\n\ngo 1.26\n")
	for _, g := range groups() {
		write(t, filepath.Join(root, g.dir, "go.mod"), "module x/"+g.name+"\n")
		write(t, filepath.Join(root, g.dir, "go.sum"), "sum "+g.name+"\n")
	}
	return root
}

func TestEnsureToolsBuildsOnceThenSkips(t *testing.T) {
	goCmd, logPath := fakeGo(t)
	root := fakeRepo(t)
	var out bytes.Buffer
	b, err := newBuilder(Options{CacheDir: filepath.Join(root, "cache"), RepoRoot: root, Go: goCmd, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.ensureTools(ctx); err != nil {
		t.Fatal(err)
	}
	first := calls(t, logPath)
	want := 0
	for _, g := range groups() {
		want += len(g.bins)
	}
	if len(first) != want {
		t.Fatalf("%d builds, want %d:\n%s", len(first), want, strings.Join(first, "\n"))
	}
	for _, c := range first {
		if !strings.Contains(c, "|CGO_ENABLED=0|build -trimpath") {
			t.Errorf("not a static trimmed build: %s", c)
		}
		if strings.Contains(c, "kube-apiserver") && !strings.Contains(c, "k8s.io/component-base/version.gitVersion="+KubernetesVersion) {
			t.Errorf("apiserver without version ldflags: %s", c)
		}
		if strings.Contains(c, "containerd/v2/cmd") && !strings.Contains(c, "-tags no_btrfs,no_devmapper,no_zfs") {
			t.Errorf("containerd without tags: %s", c)
		}
	}
	// The apiserver comes first: it compiles most of what the rest shares.
	if !strings.HasSuffix(first[0], "k8s.io/kubernetes/cmd/kube-apiserver") {
		t.Errorf("first build %s", first[0])
	}
	p := b.paths()
	for _, f := range []string{p.KubeAPIServer, p.Etcd, p.Kubelet, p.Kubectl, p.Containerd, p.ContainerdShim, p.Ctr, p.CoreDNS, p.Knative["queue"]} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	if !strings.HasSuffix(p.Etcd, filepath.Join("k8s-"+KubernetesVersion, "bin", "etcd")) {
		t.Errorf("etcd at %s", p.Etcd)
	}

	if err := b.ensureTools(ctx); err != nil {
		t.Fatal(err)
	}
	if again := calls(t, logPath); len(again) != 0 {
		t.Fatalf("second run rebuilt:\n%s", strings.Join(again, "\n"))
	}
	if !strings.Contains(out.String(), "cached") {
		t.Errorf("no progress line for cached tools:\n%s", out.String())
	}

	// A changed go.sum rebuilds that group only; a deleted binary rebuilds that binary only.
	write(t, filepath.Join(root, "tools/coredns/go.sum"), "changed\n")
	if err := os.Remove(p.Kubelet); err != nil {
		t.Fatal(err)
	}
	if err := b.ensureTools(ctx); err != nil {
		t.Fatal(err)
	}
	third := calls(t, logPath)
	if len(third) != 2 || !strings.HasSuffix(third[0], "cmd/kubelet") || !strings.HasSuffix(third[1], "github.com/coredns/coredns") {
		t.Fatalf("rebuilt:\n%s", strings.Join(third, "\n"))
	}
}

func TestEnsureToolsFailure(t *testing.T) {
	goCmd, logPath := fakeGo(t)
	root := fakeRepo(t)
	t.Setenv("FAKE_GO_FAIL", "kube-scheduler")
	b, err := newBuilder(Options{CacheDir: filepath.Join(root, "cache"), RepoRoot: root, Go: goCmd})
	if err != nil {
		t.Fatal(err)
	}
	err = b.ensureTools(context.Background())
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "kube-scheduler") {
		t.Fatalf("error %v, want the compiler output", err)
	}
	p := b.paths()
	if _, err := os.Stat(p.KubeScheduler); !os.IsNotExist(err) {
		t.Errorf("failed binary present: %v", err)
	}
	if _, err := os.Stat(p.KubeControllerManager); err != nil {
		t.Errorf("binary built before the failure is missing: %v", err)
	}
	// After the fix only the failed binary and those after it are built.
	t.Setenv("FAKE_GO_FAIL", "")
	calls(t, logPath)
	if err := b.ensureTools(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := calls(t, logPath)
	if len(got) == 0 || !strings.HasSuffix(got[0], "cmd/kube-scheduler") {
		t.Fatalf("resumed with:\n%s", strings.Join(got, "\n"))
	}
}

func TestBuildLocal(t *testing.T) {
	goCmd, logPath := fakeGo(t)
	root := fakeRepo(t)
	write(t, filepath.Join(root, "cmd/activator/main.go"), "// doc\npackage main\n")
	write(t, filepath.Join(root, "cmd/autoscaler/doc.go"), "package autoscaler\n")
	write(t, filepath.Join(root, "test/apps/helloworld/main.go"), "package main\n")
	write(t, filepath.Join(root, "test/apps/wsecho/main.go"), "package main\n")
	write(t, filepath.Join(root, "test/apps/notanapp/lib.go"), "package notanapp\n")
	write(t, filepath.Join(root, "test/apps/onlytests/main_test.go"), "package main\n")
	t.Setenv("FAKE_GO_FAIL", "")

	run := func() Paths {
		t.Helper()
		b, err := newBuilder(Options{CacheDir: filepath.Join(root, "cache"), RepoRoot: root, Go: goCmd})
		if err != nil {
			t.Fatal(err)
		}
		p := b.paths()
		if err := b.buildLocal(context.Background(), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := run()
	if p.Thaw["activator"] != filepath.Join(root, LocalBinDir, "thaw-activator") {
		t.Errorf("thaw activator at %q", p.Thaw["activator"])
	}
	if _, ok := p.Thaw["autoscaler"]; ok || !strings.Contains(p.ThawSkipped["autoscaler"], "no main package") {
		t.Errorf("autoscaler: %q, skipped %q", p.Thaw["autoscaler"], p.ThawSkipped["autoscaler"])
	}
	if len(p.Apps) != 2 || p.Apps["helloworld"] == "" || p.Apps["wsecho"] == "" {
		t.Errorf("apps %v", p.Apps)
	}
	if p.Pause == "" {
		t.Error("no pause")
	}
	for _, c := range calls(t, logPath) {
		if !strings.HasPrefix(c, root+"|CGO_ENABLED=0|build -trimpath") {
			t.Errorf("not a static build in the repo root: %s", c)
		}
	}

	// With everything skipped, Ensure names what an earlier run built.
	found, err := Ensure(context.Background(), Options{CacheDir: filepath.Join(root, "cache"), RepoRoot: root, Go: goCmd, NoInstall: true, SkipTools: true, SkipLocal: true})
	if err != nil && !errors.Is(err, ErrMissingPackages) {
		t.Fatal(err)
	}
	if found.Pause != p.Pause || found.Thaw["activator"] != p.Thaw["activator"] || len(found.Apps) != 2 || found.KubeAPIServer == "" {
		t.Errorf("skip-all paths: %+v", found)
	}
	if _, ok := found.ThawSkipped["autoscaler"]; !ok {
		t.Error("skip-all: autoscaler not reported as skipped")
	}

	// A Thaw component that does not compile is skipped with the compiler's message; an app is fatal.
	t.Setenv("FAKE_GO_FAIL", "cmd/activator")
	p = run()
	if _, ok := p.Thaw["activator"]; ok || !strings.Contains(p.ThawSkipped["activator"], "boom") {
		t.Errorf("broken activator: %q, skipped %q", p.Thaw["activator"], p.ThawSkipped["activator"])
	}
	t.Setenv("FAKE_GO_FAIL", "test/apps/wsecho")
	b, _ := newBuilder(Options{CacheDir: filepath.Join(root, "cache"), RepoRoot: root, Go: goCmd})
	pp := b.paths()
	if err := b.buildLocal(context.Background(), &pp); err == nil || !strings.Contains(err.Error(), "wsecho") {
		t.Errorf("broken app: %v", err)
	}
}

func TestFindRepoRoot(t *testing.T) {
	root := fakeRepo(t)
	deep := filepath.Join(root, "pkg", "lab", "x")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	// A nested module of another name (like tools/k8s) is walked past.
	write(t, filepath.Join(root, "pkg", "lab", "go.mod"), "module other\n")
	t.Chdir(deep)
	got, err := FindRepoRoot()
	if err != nil || got != root {
		t.Fatalf("FindRepoRoot = %q, %v; want %q", got, err, root)
	}
	t.Chdir(t.TempDir())
	if _, err := FindRepoRoot(); err == nil {
		t.Fatal("outside a checkout: no error")
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("THAW_CACHE", "/somewhere/cache")
	if d, err := DefaultCacheDir(); err != nil || d != "/somewhere/cache" {
		t.Errorf("with THAW_CACHE: %q, %v", d, err)
	}
	t.Setenv("THAW_CACHE", "")
	t.Setenv("HOME", "/home/someone")
	if d, err := DefaultCacheDir(); err != nil || d != "/home/someone/.cache/thaw" {
		t.Errorf("without: %q, %v", d, err)
	}
}

func TestNoInstallReportsMissingPackages(t *testing.T) {
	p := Paths{}
	missing := findHostPackages(&p)
	if len(missing) == 0 {
		t.Skip("every host package is installed")
	}
	root := fakeRepo(t)
	_, err := Ensure(context.Background(), Options{RepoRoot: root, CacheDir: t.TempDir(), NoInstall: true, SkipTools: true, SkipLocal: true})
	if !errors.Is(err, ErrMissingPackages) || !strings.Contains(err.Error(), missing[0]) {
		t.Fatalf("error %v, want one naming %s", err, missing[0])
	}
}
