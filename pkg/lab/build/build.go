// Package build builds the lab's tools (Kubernetes, etcd, containerd, CoreDNS, upstream Knative) into a
// versioned cache outside the checkout, the repo's own static binaries (Thaw's components, sample apps,
// pause) next to them, and installs the few Debian packages the node needs.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Pinned versions of everything the lab builds. Bumping one rebuilds that group only.
const (
	KubernetesVersion = "v1.35.4"
	ContainerdVersion = "v2.2.9"
	CoreDNSVersion    = "v1.14.7"
	KnativeVersion    = "v0.50.0"
)

// Options configures Ensure. The zero value is usable when run from inside the checkout.
type Options struct {
	// CacheDir is where tools are cached; default $THAW_CACHE, else $HOME/.cache/thaw.
	CacheDir string
	// RepoRoot is the checkout (holding go.mod and tools/); default: found by walking up from the
	// working directory to the go.mod of github.com/thaw-dev/thaw.
	RepoRoot string
	// Go is the go command; default "go" from PATH.
	Go string
	// Out receives one progress line per step; nil discards.
	Out io.Writer
	// NoInstall reports missing Debian packages as an error instead of running apt-get.
	NoInstall bool
	// SkipTools skips the cached upstream tools (only the repo's own binaries and packages are ensured).
	SkipTools bool
	// SkipLocal skips building the repo's own binaries (Thaw components, apps, pause); Paths then
	// name those already built.
	SkipLocal bool
}

// Paths are absolute paths of everything Ensure provides.
type Paths struct {
	Cache string // the cache root

	// Kubernetes and etcd (KubernetesVersion).
	Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler, Kubelet, KubeProxy, Kubectl string
	// containerd v2 (ContainerdVersion).
	Containerd, ContainerdShim, Ctr string
	// CoreDNS (CoreDNSVersion), static.
	CoreDNS string
	// Upstream Knative Serving (KnativeVersion), static, keyed by component:
	// "controller", "webhook", "activator", "autoscaler", "queue".
	Knative map[string]string

	// The repo's own static binaries, rebuilt on every Ensure (the Go build cache makes that cheap).
	// Thaw is keyed by component ("activator", "autoscaler"); a component whose package does not
	// exist or does not compile yet is absent, with the reason in ThawSkipped.
	Thaw        map[string]string
	ThawSkipped map[string]string
	// Apps are the sample apps under test/apps, keyed by directory name ("helloworld", ...).
	Apps  map[string]string
	Pause string

	// Host packages from Debian.
	Runc, Iptables, Conntrack, IP string
	CNIBinDir                     string // directory holding the CNI plugins (bridge, host-local, loopback, ...)
}

// KnativeComponents returns the upstream Knative Serving commands the lab builds and images.
func KnativeComponents() []string {
	return []string{"controller", "webhook", "activator", "autoscaler", "queue"}
}

// DefaultCacheDir returns $THAW_CACHE, else $HOME/.cache/thaw.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("THAW_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no THAW_CACHE and no home directory: %w", err)
	}
	return filepath.Join(home, ".cache", "thaw"), nil
}

// Ensure installs missing host packages, builds every missing tool into the cache, builds the repo's own
// binaries, and returns their paths. Tools are built one at a time (the host has two cores and the
// apiserver alone needs over 2 GB to link). It is safe to call repeatedly: cached tools are skipped.
func Ensure(ctx context.Context, opts Options) (Paths, error) {
	b, err := newBuilder(opts)
	if err != nil {
		return Paths{}, err
	}
	start := time.Now()
	p := b.paths()
	if b.root == "" {
		// Only for inspection (everything skipped, outside a checkout): tool paths, no local ones.
		_ = b.ensurePackages(ctx, &p)
		return p, errNoRepo
	}
	// Missing packages with NoInstall are reported at the end, after the paths are complete: callers
	// that only inspect the lab still get them.
	pkgErr := b.ensurePackages(ctx, &p)
	if pkgErr != nil && !errors.Is(pkgErr, ErrMissingPackages) {
		return p, pkgErr
	}
	if !opts.SkipTools {
		if err := b.ensureTools(ctx); err != nil {
			return p, err
		}
	}
	if opts.SkipLocal {
		b.findLocal(&p)
	} else {
		if err := b.buildLocal(ctx, &p); err != nil {
			return p, err
		}
	}
	if pkgErr != nil {
		return p, pkgErr
	}
	b.logf("build: all done in %s", since(start))
	return p, nil
}

// ErrMissingPackages is returned (wrapped) when Options.NoInstall is set and host packages are missing.
var ErrMissingPackages = errors.New("missing host packages")
