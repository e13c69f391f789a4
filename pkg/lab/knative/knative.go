// Package knative installs upstream Knative Serving into the lab from the pinned modules' own manifests:
// the serving module's config/core plus the networking and caching CRDs and config-network, which the
// upstream repository links in and module zips drop. Only image references and a few ConfigMaps change.
package knative

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// Namespace is where Knative Serving runs.
const Namespace = "knative-serving"

// Deployments are the Knative Serving Deployments the install waits for.
var Deployments = []string{"activator", "autoscaler", "controller", "webhook"}

// Modules are the module paths whose manifests make up the install.
const (
	ServingModule    = "knative.dev/serving"
	NetworkingModule = "knative.dev/networking"
	CachingModule    = "knative.dev/caching"
)

// Options shape the install.
type Options struct {
	// ModuleDirs maps module path → directory; missing ones are resolved with ResolveModuleDirs.
	ModuleDirs map[string]string
	// Image maps an upstream component ("controller", "webhook", "activator", "autoscaler", "queue") to
	// the local image reference.
	Image func(component string) string
	// Domain is config-domain's default domain (e.g. example.com).
	Domain string
	// IngressClass is config-network's ingress-class.
	IngressClass string
	// Autoscaler, when set, is merged into config-autoscaler's data.
	Autoscaler map[string]string
	// FastProbes sets readiness probe periods of Knative's Deployments to 1 s (upstream: 10 s), which
	// shortens install and rollouts; off keeps upstream's manifests.
	FastProbes bool
}

// ResolveModuleDirs asks the go command, from the main module at repoRoot, for each module's directory,
// downloading it into the module cache when needed.
func ResolveModuleDirs(ctx context.Context, repoRoot string) (map[string]string, error) {
	out := map[string]string{}
	for _, m := range []string{ServingModule, NetworkingModule, CachingModule} {
		cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", m)
		cmd.Dir = repoRoot
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go mod download %s: %w", m, err)
		}
		var info struct{ Dir, Error string }
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, fmt.Errorf("go mod download %s: %w", m, err)
		}
		if info.Dir == "" {
			return nil, fmt.Errorf("go mod download %s: no directory (%s)", m, info.Error)
		}
		out[m] = info.Dir
	}
	return out, nil
}

// manifestFiles lists the YAML files of the install in apply order.
func manifestFiles(dirs map[string]string) ([]string, error) {
	serving, networking, caching := dirs[ServingModule], dirs[NetworkingModule], dirs[CachingModule]
	if serving == "" || networking == "" || caching == "" {
		return nil, fmt.Errorf("module directories missing: %v", dirs)
	}
	var files []string
	core := filepath.Join(serving, "config", "core")
	err := filepath.WalkDir(core, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	for _, f := range []string{"certificate.yaml", "domain-claim.yaml", "ingress.yaml", "serverlessservice.yaml", "config-network.yaml"} {
		files = append(files, filepath.Join(networking, "config", f))
	}
	files = append(files, filepath.Join(caching, "config", "image.yaml"))
	return files, nil
}

const koPrefix = "ko://knative.dev/serving/cmd/"

// Manifests reads and rewrites the install's objects.
func Manifests(o Options) ([]*unstructured.Unstructured, error) {
	files, err := manifestFiles(o.ModuleDirs)
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		docs, err := kube.Decode(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		objs = append(objs, docs...)
	}
	for _, u := range objs {
		if err := rewrite(u, o); err != nil {
			return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return objs, nil
}

func image(o Options, ref string) (string, error) {
	comp, ok := strings.CutPrefix(ref, koPrefix)
	if !ok {
		return ref, nil
	}
	if o.Image == nil {
		return "", fmt.Errorf("no image for %s", ref)
	}
	return o.Image(comp), nil
}

func rewrite(u *unstructured.Unstructured, o Options) error {
	switch u.GetKind() {
	case "Deployment":
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		for i, ci := range containers {
			c, _ := ci.(map[string]any)
			if ref, ok := c["image"].(string); ok {
				img, err := image(o, ref)
				if err != nil {
					return err
				}
				c["image"] = img
			}
			if o.FastProbes {
				if p, ok := c["readinessProbe"].(map[string]any); ok {
					p["periodSeconds"] = int64(1)
				}
			}
			containers[i] = c
		}
		return unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
	case "Image": // caching.internal.knative.dev Image of the queue-proxy
		if ref, ok, _ := unstructured.NestedString(u.Object, "spec", "image"); ok {
			img, err := image(o, ref)
			if err != nil {
				return err
			}
			return unstructured.SetNestedField(u.Object, img, "spec", "image")
		}
	case "ConfigMap":
		data, _, _ := unstructured.NestedStringMap(u.Object, "data")
		if data == nil {
			data = map[string]string{}
		}
		switch u.GetName() {
		case "config-deployment":
			img, err := image(o, data["queue-sidecar-image"])
			if err != nil {
				return err
			}
			data["queue-sidecar-image"] = img
		case "config-domain":
			if o.Domain != "" {
				data[o.Domain] = ""
			}
		case "config-network":
			if o.IngressClass != "" {
				data["ingress-class"] = o.IngressClass
			}
		case "config-autoscaler":
			for k, v := range o.Autoscaler {
				data[k] = v
			}
		default:
			return nil
		}
		return unstructured.SetNestedStringMap(u.Object, data, "data")
	}
	return nil
}

// Install applies the manifests and waits for Knative's Deployments to be available.
func Install(ctx context.Context, c *kube.Client, o Options) error {
	objs, err := Manifests(o)
	if err != nil {
		return err
	}
	if err := c.Apply(ctx, objs); err != nil {
		return err
	}
	return c.WaitDeployments(ctx, Namespace, Deployments...)
}
