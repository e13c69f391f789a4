package images

import (
	"context"
	"fmt"
	"sort"

	"github.com/thaw-dev/thaw/pkg/lab/build"
)

// Specs lists every lab image for the binaries in paths: the upstream Knative components, Thaw's
// activator and autoscaler, CoreDNS, pause and the sample apps. Thaw components absent from paths.Thaw
// are returned in skipped (component → reason) instead.
func Specs(paths build.Paths) (specs []Spec, skipped map[string]string) {
	skipped = map[string]string{}
	for _, c := range build.KnativeComponents() {
		specs = append(specs, Spec{Name: KnativeImage(c), Binary: paths.Knative[c], BinaryName: c})
	}
	for _, c := range []string{"activator", "autoscaler"} {
		bin, ok := paths.Thaw[c]
		if !ok || bin == "" {
			reason := paths.ThawSkipped[c]
			if reason == "" {
				reason = "not built"
			}
			skipped[ThawImage(c)] = reason
			continue
		}
		specs = append(specs, Spec{Name: ThawImage(c), Binary: bin, BinaryName: c})
	}
	// CoreDNS binds port 53; the binary has no file capabilities, so it runs as root.
	specs = append(specs, Spec{Name: CoreDNSImage, Binary: paths.CoreDNS, BinaryName: "coredns", User: "0:0"})
	// The user of registry.k8s.io/pause.
	specs = append(specs, Spec{Name: PauseImage, Binary: paths.Pause, BinaryName: "pause", User: "65535:65535"})
	apps := make([]string, 0, len(paths.Apps))
	for app := range paths.Apps {
		apps = append(apps, app)
	}
	sort.Strings(apps)
	for _, app := range apps {
		specs = append(specs, Spec{Name: AppImage(app), Binary: paths.Apps[app], BinaryName: app})
	}
	return specs, skipped
}

// BuildAll builds every lab image (see Specs) as tarballs in outDir, reusing those whose binary and
// spec are unchanged. Skipped Thaw components come back as ImageRefs with Skipped set.
func BuildAll(ctx context.Context, paths build.Paths, outDir string) ([]ImageRef, error) {
	specs, skipped := Specs(paths)
	refs := make([]ImageRef, 0, len(specs)+len(skipped))
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			return refs, err
		}
		if s.Binary == "" {
			return refs, fmt.Errorf("image %s: no binary path (was build.Ensure run?)", s.Name)
		}
		ref, err := Build(s, outDir)
		if err != nil {
			return refs, err
		}
		refs = append(refs, ref)
	}
	names := make([]string, 0, len(skipped))
	for n := range skipped {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		refs = append(refs, ImageRef{Name: n, Skipped: skipped[n]})
	}
	return refs, nil
}
