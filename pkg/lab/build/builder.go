package build

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const mainModule = "github.com/thaw-dev/thaw"

// binary is one command of a tool group: the output name and the package to build.
type binary struct{ name, pkg string }

// group is a set of binaries built from one tools module at one version.
type group struct {
	name    string // cache folder prefix, e.g. "k8s"
	version string
	dir     string // the tools module, relative to the repo root
	tags    string
	ldflags string
	bins    []binary
}

func (g group) folder() string { return g.name + "-" + g.version }

// groups lists every cached tool. The order is the build order: the apiserver first, because it
// compiles most of what the other Kubernetes binaries share.
func groups() []group {
	k8s := "k8s.io/kubernetes/cmd/"
	var kv []string
	for _, p := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		// Without these, binaries report v0.0.0-master and version-checking clients reject them.
		kv = append(kv, "-X "+p+".gitVersion="+KubernetesVersion, "-X "+p+".gitMajor=1",
			"-X "+p+".gitMinor=35", "-X "+p+".gitTreeState=clean",
			"-X "+p+".buildDate=1970-01-01T00:00:00Z")
	}
	serving := "knative.dev/serving/cmd/"
	return []group{
		{name: "k8s", version: KubernetesVersion, dir: "tools/k8s", ldflags: strings.Join(kv, " "), bins: []binary{
			{"kube-apiserver", k8s + "kube-apiserver"},
			{"etcd", "go.etcd.io/etcd/server/v3"},
			{"kube-controller-manager", k8s + "kube-controller-manager"},
			{"kube-scheduler", k8s + "kube-scheduler"},
			{"kubectl", k8s + "kubectl"},
			{"kubelet", k8s + "kubelet"},
			{"kube-proxy", k8s + "kube-proxy"},
		}},
		{name: "containerd", version: ContainerdVersion, dir: "tools/containerd", tags: "no_btrfs,no_devmapper,no_zfs",
			ldflags: "-X github.com/containerd/containerd/v2/version.Version=" + ContainerdVersion +
				" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2",
			bins: []binary{
				{"containerd", "github.com/containerd/containerd/v2/cmd/containerd"},
				{"containerd-shim-runc-v2", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"},
				{"ctr", "github.com/containerd/containerd/v2/cmd/ctr"},
			}},
		{name: "coredns", version: CoreDNSVersion, dir: "tools/coredns", bins: []binary{
			{"coredns", "github.com/coredns/coredns"},
		}},
		{name: "knative", version: KnativeVersion, dir: "tools/knative", bins: []binary{
			{"queue", serving + "queue"},
			{"controller", serving + "controller"},
			{"webhook", serving + "webhook"},
			{"activator", serving + "activator"},
			{"autoscaler", serving + "autoscaler"},
		}},
	}
}

type builder struct {
	opts      Options
	cache     string
	root      string
	goCmd     string
	goVersion string
	out       io.Writer
}

func newBuilder(opts Options) (*builder, error) {
	b := &builder{opts: opts, cache: opts.CacheDir, root: opts.RepoRoot, goCmd: opts.Go, out: opts.Out}
	var err error
	if b.cache == "" {
		if b.cache, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	if b.cache, err = filepath.Abs(b.cache); err != nil {
		return nil, err
	}
	if b.root == "" {
		if b.root, err = FindRepoRoot(); err != nil {
			if !opts.SkipTools || !opts.SkipLocal {
				return nil, err
			}
			b.root = "" // inspection only: Ensure returns the tool paths with errNoRepo
		}
	}
	if b.goCmd == "" {
		b.goCmd = "go"
	}
	if b.out == nil {
		b.out = io.Discard
	}
	return b, nil
}

var errNoRepo = fmt.Errorf("no go.mod of %s above the working directory; set RepoRoot", mainModule)

// FindRepoRoot walks up from the working directory to the checkout's go.mod.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isMainModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errNoRepo
		}
		dir = parent
	}
}

func isMainModule(goMod string) bool {
	f, err := os.Open(goMod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == mainModule
		}
	}
	return false
}

func (b *builder) logf(format string, args ...any) {
	fmt.Fprintf(b.out, format+"\n", args...)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// paths fills in where every tool lives (or will live) in the cache.
func (b *builder) paths() Paths {
	bin := func(g, name string) string {
		for _, gr := range groups() {
			if gr.name == g {
				return filepath.Join(b.cache, gr.folder(), "bin", name)
			}
		}
		panic("unknown tool group " + g) // programming error: groups() is static
	}
	p := Paths{
		Cache:                 b.cache,
		Etcd:                  bin("k8s", "etcd"),
		KubeAPIServer:         bin("k8s", "kube-apiserver"),
		KubeControllerManager: bin("k8s", "kube-controller-manager"),
		KubeScheduler:         bin("k8s", "kube-scheduler"),
		Kubelet:               bin("k8s", "kubelet"),
		KubeProxy:             bin("k8s", "kube-proxy"),
		Kubectl:               bin("k8s", "kubectl"),
		Containerd:            bin("containerd", "containerd"),
		ContainerdShim:        bin("containerd", "containerd-shim-runc-v2"),
		Ctr:                   bin("containerd", "ctr"),
		CoreDNS:               bin("coredns", "coredns"),
		Knative:               map[string]string{},
		Thaw:                  map[string]string{},
		ThawSkipped:           map[string]string{},
		Apps:                  map[string]string{},
	}
	for _, c := range KnativeComponents() {
		p.Knative[c] = bin("knative", c)
	}
	return p
}

func (b *builder) ensureTools(ctx context.Context) error {
	var err error
	if b.goVersion, err = b.goEnv(ctx, "GOVERSION"); err != nil {
		return err
	}
	for _, g := range groups() {
		if err := b.ensureGroup(ctx, g); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) goEnv(ctx context.Context, key string) (string, error) {
	out, err := exec.CommandContext(ctx, b.goCmd, "env", key).Output()
	if err != nil {
		return "", fmt.Errorf("%s env %s: %w", b.goCmd, key, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// stampKey identifies a build: a binary is rebuilt when any input that changes it changes.
func (b *builder) stampKey(g group, bin binary) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(b.root, g.dir, f))
		if err != nil {
			return "", fmt.Errorf("tools module %s: %w", g.dir, err)
		}
		h.Write(data)
	}
	fmt.Fprintf(h, "\x00%s\x00%s\x00%s\x00%s\x00%s", g.version, b.goVersion, g.tags, g.ldflags, bin.pkg)
	return g.version + " " + hex.EncodeToString(h.Sum(nil)), nil
}

func (b *builder) ensureGroup(ctx context.Context, g group) error {
	binDir := filepath.Join(b.cache, g.folder(), "bin")
	stampDir := filepath.Join(b.cache, g.folder(), "stamps")
	for _, d := range []string{binDir, stampDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, bin := range g.bins {
		key, err := b.stampKey(g, bin)
		if err != nil {
			return err
		}
		out := filepath.Join(binDir, bin.name)
		stamp := filepath.Join(stampDir, bin.name)
		if have, err := os.ReadFile(stamp); err == nil && string(have) == key {
			if _, err := os.Stat(out); err == nil {
				b.logf("build: %-24s %s cached", bin.name, g.folder())
				continue
			}
		}
		b.logf("build: %-24s %s building...", bin.name, g.folder())
		start := time.Now()
		args := []string{"build", "-trimpath"}
		if g.tags != "" {
			args = append(args, "-tags", g.tags)
		}
		args = append(args, "-ldflags", strings.TrimSpace("-s -w "+g.ldflags), "-o", out+".tmp", bin.pkg)
		if err := b.goBuild(ctx, filepath.Join(b.root, g.dir), args); err != nil {
			return fmt.Errorf("build %s %s: %w", bin.name, g.version, err)
		}
		if err := os.Rename(out+".tmp", out); err != nil {
			return err
		}
		if err := os.WriteFile(stamp, []byte(key), 0o644); err != nil {
			return err
		}
		b.logf("build: %-24s %s built in %s", bin.name, g.folder(), since(start))
	}
	return nil
}

// goBuild runs the go command in dir with cgo off (every binary must be static to run FROM scratch),
// returning the tail of its output on failure.
func (b *builder) goBuild(ctx context.Context, dir string, args []string) error {
	cmd := exec.CommandContext(ctx, b.goCmd, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(buf.String(), 30))
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
