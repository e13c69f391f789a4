// Package images builds Thaw's release images (the activator and the autoscaler) and pushes them to a
// registry: one OCI index per component, one image per platform, each image laid out as the lab's
// (pkg/lab/images: a static binary under /ko-app, non-root 65532, no timestamps), so the same commit and
// toolchain give the same digests.
package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	labimages "github.com/thaw-dev/thaw/pkg/lab/images"
)

// Components are Thaw's images, by the name of their Deployment and container in Knative Serving.
var Components = []string{"activator", "autoscaler"}

// Packages maps each component to its main package in this module.
var Packages = map[string]string{
	"activator":  "./cmd/activator",
	"autoscaler": "./cmd/autoscaler",
}

// DefaultTag tags images built from a checkout.
const DefaultTag = "dev"

// Repository names a component's repository under registry, e.g. ghcr.io/me/thaw + activator →
// ghcr.io/me/thaw/activator. The lab's own names (ko.local/thaw/activator) follow the same rule.
func Repository(registry, component string) string {
	return strings.TrimSuffix(registry, "/") + "/" + component
}

// DefaultPlatforms are the platforms built when none are named: the lab's and most clusters'.
var DefaultPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}}

// ParsePlatforms reads a comma-separated list like linux/amd64,linux/arm64. Only linux is accepted:
// the images hold Linux binaries.
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		osName, arch, ok := strings.Cut(f, "/")
		if !ok || osName != "linux" || arch == "" || strings.Contains(arch, "/") {
			return nil, fmt.Errorf("platform %q: want linux/<arch>, e.g. linux/amd64", f)
		}
		if seen[arch] {
			return nil, fmt.Errorf("platform %q named twice", f)
		}
		seen[arch] = true
		out = append(out, v1.Platform{OS: osName, Architecture: arch})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no platform in %q", s)
	}
	return out, nil
}

// Binary is one component's static binary for one platform.
type Binary struct {
	Platform v1.Platform
	Path     string
}

// BuildBinaries compiles every component for every platform into outDir, static and stripped, with
// the lab's flags (CGO off, -trimpath, -s -w) so that a rebuild of the same tree is byte-identical.
// pkgs maps component → main package, relative to repoRoot.
func BuildBinaries(ctx context.Context, repoRoot, outDir string, pkgs map[string]string, platforms []v1.Platform) (map[string][]Binary, error) {
	out := map[string][]Binary{}
	for c, pkg := range pkgs {
		for _, p := range platforms {
			path := filepath.Join(outDir, p.OS+"-"+p.Architecture, c)
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", path, pkg)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
			if b, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("build %s for %s/%s: %w\n%s", c, p.OS, p.Architecture, err, b)
			}
			out[c] = append(out[c], Binary{Platform: p, Path: path})
		}
	}
	return out, nil
}

// Index assembles component's OCI index: one OCI image per binary, each with the lab's layout.
func Index(component string, bins []Binary) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, b := range bins {
		data, err := os.ReadFile(b.Path)
		if err != nil {
			return nil, err
		}
		if err := labimages.CheckStatic(data); err != nil {
			return nil, fmt.Errorf("%s %s: %w", component, b.Path, err)
		}
		img, err := labimages.Image(labimages.Spec{Name: component, BinaryName: component,
			Arch: b.Platform.Architecture, OCI: true}, data)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", component, b.Platform.OS, b.Platform.Architecture, err)
		}
		p := b.Platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx, nil
}

// Pushed is one component's index in a registry.
type Pushed struct {
	Component string
	Tag       string // repository:tag
	Digest    string // the index's digest, sha256:...
}

// Ref is the pinned reference, repository:tag@digest.
func (p Pushed) Ref() string { return p.Tag + "@" + p.Digest }

// PushOptions shape a push.
type PushOptions struct {
	// Registry is the repository prefix, e.g. ghcr.io/me/thaw; each component goes to Repository().
	Registry string
	Tag      string // default DefaultTag
	// Insecure talks plain HTTP to the registry (loopback and private addresses do anyway).
	Insecure bool
	// Keychain authenticates; default authn.DefaultKeychain (docker's config.json and its helpers).
	Keychain authn.Keychain
}

func (o PushOptions) keychain() authn.Keychain {
	if o.Keychain == nil {
		return authn.DefaultKeychain
	}
	return o.Keychain
}

// Push writes each component's index to its repository under the tag. Blobs the registry holds are not
// sent again.
func Push(ctx context.Context, indexes map[string]v1.ImageIndex, o PushOptions) ([]Pushed, error) {
	if o.Tag == "" {
		o.Tag = DefaultTag
	}
	var nameOpts []name.Option
	if o.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	var out []Pushed
	for _, c := range Components {
		idx, ok := indexes[c]
		if !ok {
			continue
		}
		tag, err := name.NewTag(Repository(o.Registry, c)+":"+o.Tag, nameOpts...)
		if err != nil {
			return out, fmt.Errorf("registry %q: %w", o.Registry, err)
		}
		if err := remote.WriteIndex(tag, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(o.keychain())); err != nil {
			return out, fmt.Errorf("push %s: %w", tag, err)
		}
		d, err := idx.Digest()
		if err != nil {
			return out, err
		}
		out = append(out, Pushed{Component: c, Tag: tag.String(), Digest: d.String()})
	}
	return out, nil
}
