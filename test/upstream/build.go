package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/thaw-dev/thaw/pkg/lab/images"
)

// ServingModule is the module the suites and test images come from.
const ServingModule = "knative.dev/serving"

// ToolsModule is the checkout directory of the module that pins upstream Knative's build (its go.sum
// holds the suites' dependencies, so the main module's go.mod does not grow them).
const ToolsModule = "tools/knative"

// Module is a module in the module cache.
type Module struct {
	Path, Version, Dir string
}

// ResolveModule asks the go command in dir for the module's version and directory (downloading it
// when needed).
func ResolveModule(ctx context.Context, dir, path string) (Module, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", path)
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return Module{}, fmt.Errorf("go mod download %s: %w", path, err)
	}
	return parseDownload(b)
}

func parseDownload(b []byte) (Module, error) {
	var m struct{ Path, Version, Dir, Error string }
	if err := json.Unmarshal(b, &m); err != nil {
		return Module{}, fmt.Errorf("go mod download: %w", err)
	}
	if m.Dir == "" || m.Version == "" {
		return Module{}, fmt.Errorf("go mod download %s: no directory or version (%s)", m.Path, m.Error)
	}
	return Module{Path: m.Path, Version: m.Version, Dir: m.Dir}, nil
}

// Builder compiles upstream's suites and test images from the tools module.
type Builder struct {
	ToolsDir string // checkout's tools/knative
	// CacheDir holds the binaries, keyed by module version (e.g. $THAW_CACHE/knative-v0.50.0/upstream-tests).
	CacheDir string
	Out      io.Writer
}

// CacheDirFor is the cache directory for a version of the serving module.
func CacheDirFor(thawCache, version string) string {
	return filepath.Join(thawCache, "knative-"+version, "upstream-tests")
}

func (b Builder) goCmd(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.ToolsDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out := b.Out
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// SuiteBinary returns the path of suite s's compiled test binary, compiling it unless the cache
// already holds it for this module version.
func (b Builder) SuiteBinary(ctx context.Context, s Suite) (string, error) {
	// One binary per package: suites of the same package share it.
	out := filepath.Join(b.CacheDir, path.Base(s.Package)+".test")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(b.CacheDir, 0o755); err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := b.goCmd(ctx, "test", "-c", "-tags=e2e", "-o", tmp, s.Package); err != nil {
		return "", err
	}
	return out, os.Rename(tmp, out)
}

// TestImageRef names a test image as the suites' --dockerrepo and --tag make it.
func TestImageRef(repo, name, tag string) string { return repo + "/" + name + ":" + tag }

// TestImages builds each test image's static binary (go's build cache makes a rebuild cheap) and
// wraps it in a lab image (non-root, linux/amd64) as <repo>/<name>:<tag>, tarballs in imgDir.
func (b Builder) TestImages(ctx context.Context, names []string, repo, tag, imgDir string) ([]images.ImageRef, error) {
	binDir := filepath.Join(b.CacheDir, "images-bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	var refs []images.ImageRef
	for _, n := range names {
		bin := filepath.Join(binDir, n)
		if err := b.goCmd(ctx, "build", "-trimpath", "-o", bin, TestImagePackage(n)); err != nil {
			return refs, err
		}
		ref, err := images.Build(images.Spec{Name: TestImageRef(repo, n, tag), Binary: bin, BinaryName: n}, imgDir)
		if err != nil {
			return refs, err
		}
		refs = append(refs, ref)
	}
	return refs, nil
}
