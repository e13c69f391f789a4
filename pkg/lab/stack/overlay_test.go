package stack

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

const overlay = "../../../config/overlays/thaw"

// overlayImages renders the overlay's partial Deployments with its images transformer applied.
func overlayImages(t *testing.T) map[string]string {
	t.Helper()
	var k struct {
		Resources []string
		Images    []struct{ Name, NewName, NewTag string }
	}
	b, err := os.ReadFile(filepath.Join(overlay, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(overlay, r))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kube.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			cs, _, _ := unstructuredContainers(o.Object)
			for _, c := range cs {
				img := c["image"].(string)
				for _, im := range k.Images {
					if im.Name == img {
						img = im.NewName + ":" + im.NewTag
					}
				}
				out[c["name"].(string)] = img
			}
		}
	}
	return out
}

func unstructuredContainers(obj map[string]any) ([]map[string]any, bool, error) {
	spec, _ := obj["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	ps, _ := tmpl["spec"].(map[string]any)
	list, _ := ps["containers"].([]any)
	var out []map[string]any
	for _, c := range list {
		out = append(out, c.(map[string]any))
	}
	return out, len(out) > 0, nil
}

func TestOverlayMatchesSwap(t *testing.T) {
	got := overlayImages(t)
	want := ThawImages()
	if len(got) != len(want) {
		t.Fatalf("overlay touches %v, swap touches %v", got, want)
	}
	for c, img := range want {
		if got[c] != img {
			t.Errorf("overlay %s image %q, swap uses %q", c, got[c], img)
		}
	}
}

// TestOverlayKustomize renders the overlay with kubectl's kustomize when the lab's kubectl is built.
func TestOverlayKustomize(t *testing.T) {
	cache, err := build.DefaultCacheDir()
	if err != nil {
		t.Skip(err)
	}
	kubectl := filepath.Join(cache, "k8s-"+build.KubernetesVersion, "bin", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Skipf("kubectl not built: %v", err)
	}
	out, err := exec.Command(kubectl, "kustomize", overlay).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	objs, err := kube.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("overlay renders %d objects", len(objs))
	}
	for _, img := range ThawImages() {
		if !strings.Contains(string(out), "image: "+img) {
			t.Errorf("rendered overlay lacks %s:\n%s", img, out)
		}
	}
}
