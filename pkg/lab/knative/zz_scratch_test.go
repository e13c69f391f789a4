package knative

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

func TestScratchApply(t *testing.T) {
	if os.Getenv("LABB_SCRATCH") == "" {
		t.Skip()
	}
	ctx := context.Background()
	dirs, err := ResolveModuleDirs(ctx, "../../..")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Manifests(Options{ModuleDirs: dirs, Image: func(c string) string { return "ko.local/knative/" + c + ":v0.50.0" }, Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kube.NewFromKubeconfig("/root/.cache/thaw/lab/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := cl.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	t.Logf("applied %d objects in %s", len(objs), time.Since(t0))
	t0 = time.Now()
	if err := cl.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	t.Logf("re-applied %d objects in %s", len(objs), time.Since(t0))
}
