package stack

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/images"
	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/knative"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

const (
	overlay = "../../../config/overlays/thaw"
	base    = "../../../config/upstream/serving-v0.50.0"
)

var vendored = []string{"activator.yaml", "autoscaler.yaml"}

// The overlay's images are the ones `thaw lab swap` runs.
func TestOverlayMatchesSwap(t *testing.T) {
	got, err := images.ReadOverlay(filepath.Join(overlay, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := ThawImages()
	if len(got) != len(want) {
		t.Fatalf("overlay sets %v, swap uses %v", got, want)
	}
	for c, img := range want {
		if got[c] != img {
			t.Errorf("overlay %s image %q, swap uses %q", c, got[c], img)
		}
	}
}

// moduleDeployments reads the serving module's own files, skipping when the module cannot be had.
func moduleDeployments(t *testing.T) string {
	t.Helper()
	repo, err := build.FindRepoRoot()
	if err != nil {
		testutil.SkipOutsideCI(t, "%v", err)
	}
	dirs, err := knative.ResolveModuleDirs(context.Background(), repo)
	if err != nil {
		testutil.SkipOutsideCI(t, "serving module: %v", err)
	}
	return filepath.Join(dirs[knative.ServingModule], "config", "core", "deployments")
}

// The base is upstream's files, byte for byte.
func TestOverlayBaseIsUpstreams(t *testing.T) {
	mod := moduleDeployments(t)
	for _, f := range vendored {
		want, err := os.ReadFile(filepath.Join(mod, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(base, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the module's %s", filepath.Join(base, f), f)
		}
	}
}

// TestOverlayKustomize renders the overlay with kubectl's kustomize (when the lab's kubectl is built):
// upstream's whole objects, the two Deployments' images alone changed.
func TestOverlayKustomize(t *testing.T) {
	cache, err := build.DefaultCacheDir()
	if err != nil {
		testutil.SkipOutsideCI(t, "%v", err)
	}
	kubectl := filepath.Join(cache, "k8s-"+build.KubernetesVersion, "bin", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		testutil.SkipOutsideCI(t, "kubectl not built: %v", err)
	}
	out, err := exec.Command(kubectl, "kustomize", overlay).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	rendered, err := kube.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	var want []*unstructured.Unstructured
	for _, f := range vendored {
		b, err := os.ReadFile(filepath.Join(base, f))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kube.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, objs...)
	}
	// Objects of Thaw's own (a NetworkPolicy) may come beside upstream's, but no other Deployment.
	deployments := 0
	for _, r := range rendered {
		if r.GetKind() == "Deployment" {
			deployments++
		}
	}
	if deployments != 2 {
		t.Fatalf("overlay renders %d Deployments, want activator and autoscaler", deployments)
	}
	thaw := ThawImages()
	for _, w := range want {
		if w.GetKind() == "Deployment" {
			cs, _, _ := unstructured.NestedSlice(w.Object, "spec", "template", "spec", "containers")
			for _, c := range cs {
				m := c.(map[string]any)
				if img, ok := thaw[m["name"].(string)]; ok {
					m["image"] = img
				}
			}
			_ = unstructured.SetNestedSlice(w.Object, cs, "spec", "template", "spec", "containers")
		}
		found := false
		for _, r := range rendered {
			if r.GetKind() == w.GetKind() && r.GetName() == w.GetName() {
				found = true
				if !reflect.DeepEqual(r.Object, w.Object) {
					t.Errorf("%s %s rendered differs from upstream's with Thaw's image:\n%v\n%v", w.GetKind(), w.GetName(), r.Object, w.Object)
				}
			}
		}
		if !found {
			t.Errorf("%s %s not rendered", w.GetKind(), w.GetName())
		}
	}
}
