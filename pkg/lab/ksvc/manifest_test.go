package ksvc

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

func TestManifestDecodes(t *testing.T) {
	for _, m := range []Manifest{
		{Name: "a", Namespace: "default", Image: "ko.local/apps/autoscale:dev"},
		{Name: "b", Namespace: "x", Image: "img", ContainerConcurrency: 3,
			Annotations: map[string]string{"autoscaling.knative.dev/window": "6s", "autoscaling.knative.dev/target": "10"}},
	} {
		objs, err := kube.Decode([]byte(m.YAML()))
		if err != nil || len(objs) != 1 {
			t.Fatalf("%s: decode = %d objects, %v\n%s", m.Name, len(objs), err, m.YAML())
		}
		u := objs[0]
		if u.GetName() != m.Name || u.GetNamespace() != m.Namespace || u.GetKind() != "Service" {
			t.Errorf("%s: got %s %s/%s", m.Name, u.GetKind(), u.GetNamespace(), u.GetName())
		}
		ann, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "annotations")
		for k, v := range m.Annotations {
			if ann[k] != v {
				t.Errorf("%s: annotation %s = %q, want %q", m.Name, k, ann[k], v)
			}
		}
		cc, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "template", "spec", "containerConcurrency")
		if want := m.ContainerConcurrency; (want > 0) != found || (found && fmt.Sprint(cc) != fmt.Sprint(want)) {
			t.Errorf("%s: containerConcurrency = %v (set %v), want %d", m.Name, cc, found, want)
		}
	}
}
