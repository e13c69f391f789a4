package faultinject

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// TestChaosOverlay renders config/overlays/thaw-chaos with kubectl's kustomize (when the lab's
// kubectl is built): Thaw's overlay, with the switch in both containers' env and nothing else changed.
func TestChaosOverlay(t *testing.T) {
	cache, err := build.DefaultCacheDir()
	if err != nil {
		testutil.SkipOutsideCI(t, "%v", err)
	}
	kubectl := filepath.Join(cache, "k8s-"+build.KubernetesVersion, "bin", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		testutil.SkipOutsideCI(t, "kubectl not built: %v", err)
	}
	render := func(dir string) map[string]*unstructured.Unstructured {
		t.Helper()
		out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		objs, err := kube.Decode(out)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*unstructured.Unstructured{}
		for _, o := range objs {
			m[o.GetKind()+"/"+o.GetName()] = o
		}
		return m
	}
	plain := render("../../config/overlays/thaw")
	chaos := render("../../config/overlays/thaw-chaos")
	if len(plain) != len(chaos) {
		t.Fatalf("thaw-chaos renders %d objects, thaw %d", len(chaos), len(plain))
	}
	for key, want := range plain {
		got := chaos[key]
		if got == nil {
			t.Fatalf("thaw-chaos lacks %s", key)
		}
		if want.GetKind() == "Deployment" {
			containers, _, _ := unstructured.NestedSlice(got.Object, "spec", "template", "spec", "containers")
			if len(containers) != 1 {
				t.Fatalf("%s: %d containers", key, len(containers))
			}
			c := containers[0].(map[string]any)
			env, _ := c["env"].([]any)
			var rest []any
			found := 0
			for _, e := range env {
				if e := e.(map[string]any); e["name"] == EnvVar {
					found++
					if e["value"] != EnvEnabled {
						t.Errorf("%s: %s=%v, want %s", key, EnvVar, e["value"], EnvEnabled)
					}
					continue
				}
				rest = append(rest, e)
			}
			if found != 1 {
				t.Errorf("%s: %s set %d times, want once", key, EnvVar, found)
			}
			c["env"] = rest
			if err := unstructured.SetNestedSlice(got.Object, containers, "spec", "template", "spec", "containers"); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(got.Object, want.Object) {
			t.Errorf("%s differs from Thaw's overlay beyond the switch", key)
		}
	}
}
