//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/knative"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/swap"
)

// testSwapCLI installs upstream's activator and autoscaler the way Knative's docs do (client-side
// `kubectl apply -f`, which leaves kubectl's last-applied annotation), then swaps Thaw in and out with
// `thaw swap`/`thaw unswap` and with `kubectl apply -k config/overlays/thaw`: every field of both
// Deployments other than the image (and the bookkeeping the API server and the Deployment controller
// keep) stays byte for byte what it was. It runs just before teardown (see TestZZDownRestoresHost).
func testSwapCLI(t *testing.T) {
	needLab(t)
	if len(lab.stack.Paths.ThawSkipped) > 0 {
		testutil.SkipOutsideCI(t, "Thaw's components not built: %v", lab.stack.Paths.ThawSkipped)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	kubeconfig := lab.stack.Lab.Cfg.Kubeconfig()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Dir = lab.repo
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		t.Logf("%s %s: %s", filepath.Base(name), strings.Join(args, " "), time.Since(t0).Round(time.Millisecond))
	}
	kubectl := lab.stack.Paths.Kubectl
	upstream := swap.Images{}
	for _, c := range swap.Components {
		upstream[c] = images.KnativeImage(c)
	}
	wait := func(want swap.Images) {
		t.Helper()
		if err := swap.Wait(ctx, lab.client.Kube, want, swap.Options{Timeout: 3 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	}

	// Upstream's two Deployments as the lab installs them, applied client-side.
	manifest := upstreamDeployments(t)
	run(kubectl, "apply", "-f", manifest)
	wait(upstream)
	before := deploymentState(ctx, t)

	run(lab.stack.Opts.Thaw, "swap", "--kubeconfig", kubeconfig)
	wait(swap.Images(stack.ThawImages()))
	sameExcept(t, "after thaw swap", before, deploymentState(ctx, t), true, swap.Annotation, swap.AnnotationTo)

	run(lab.stack.Opts.Thaw, "unswap", "--kubeconfig", kubeconfig)
	wait(upstream)
	sameExcept(t, "after thaw unswap", before, deploymentState(ctx, t), false)

	// The overlay, client-side applied over the client-side install: whole Deployments, so kubectl's
	// three-way merge removes nothing. kubectl records what it applied in its annotation.
	run(kubectl, "apply", "-k", filepath.Join(lab.repo, "config", "overlays", "thaw"))
	wait(swap.Images(stack.ThawImages()))
	const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"
	sameExcept(t, "after kubectl apply -k", before, deploymentState(ctx, t), true, lastApplied)

	// Back with upstream's manifests, as Knative's docs would.
	run(kubectl, "apply", "-f", manifest)
	wait(upstream)
	sameExcept(t, "after kubectl apply -f upstream", before, deploymentState(ctx, t), false)
}

// upstreamDeployments writes upstream's activator and autoscaler Deployments, as the lab renders them
// (its images), to a file for kubectl.
func upstreamDeployments(t *testing.T) string {
	t.Helper()
	dirs, err := knative.ResolveModuleDirs(context.Background(), lab.repo)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := knative.Manifests(knative.Options{ModuleDirs: dirs, Image: images.KnativeImage})
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, o := range objs {
		if o.GetKind() == "Deployment" && (o.GetName() == "activator" || o.GetName() == "autoscaler") {
			b, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			docs = append(docs, string(b))
		}
	}
	if len(docs) != 2 {
		t.Fatalf("%d upstream Deployments", len(docs))
	}
	p := filepath.Join(t.TempDir(), "upstream.yaml")
	if err := os.WriteFile(p, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// deploymentState is both Deployments without what the API server and the Deployment controller
// keep for themselves (resourceVersion, generation, managedFields, the revision annotation, status).
func deploymentState(ctx context.Context, t *testing.T) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, c := range swap.Components {
		d, err := lab.client.Kube.AppsV1().Deployments(swap.Namespace).Get(ctx, c, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
		if err != nil {
			t.Fatal(err)
		}
		md := u["metadata"].(map[string]any)
		delete(md, "resourceVersion")
		delete(md, "generation")
		delete(md, "managedFields")
		if ann, ok := md["annotations"].(map[string]any); ok {
			delete(ann, "deployment.kubernetes.io/revision")
		}
		delete(u, "status")
		out[c] = u
	}
	return out
}

// sameExcept compares two states as JSON bytes, after blanking the container images (when
// withoutImage) and dropping the named annotations from both.
func sameExcept(t *testing.T, when string, before, after map[string]map[string]any, withoutImage bool, annotations ...string) {
	t.Helper()
	for _, c := range swap.Components {
		b, a := render(t, before[c], c, withoutImage, annotations), render(t, after[c], c, withoutImage, annotations)
		if b != a {
			t.Errorf("%s: deployment %s changed beyond the image:\nbefore: %s\nafter:  %s", when, c, b, a)
		}
	}
}

func render(t *testing.T, u map[string]any, container string, withoutImage bool, annotations []string) string {
	t.Helper()
	// A deep copy through JSON, then the edits.
	raw, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if ann, ok := m["metadata"].(map[string]any)["annotations"].(map[string]any); ok {
		for _, a := range annotations {
			delete(ann, a)
		}
	}
	if withoutImage {
		spec := m["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		for _, ci := range spec["containers"].([]any) {
			if ctr := ci.(map[string]any); ctr["name"] == container {
				ctr["image"] = ""
			}
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
