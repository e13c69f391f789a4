//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/thaw-dev/thaw/pkg/lab/build"
	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// clusterDomain is the non-default domain of TestZZZClusterDomain.
const clusterDomain = "thaw.test"

// TestZZZClusterDomain runs after the teardown (its file sorts last): a lab whose cluster domain is not
// cluster.local, with Thaw swapped in, scales a revision with the activator out of its path (the
// default target-burst-capacity) to zero, which takes the autoscaler's probe of the activator through
// <service>.<namespace>.svc.<domain>, and serves a cold start through the activator. The suite started
// with THAW_E2E_CLUSTER_DOMAIN=thaw.test (make test-e2e-domain) reuses its lab; otherwise this test
// brings one up and down (about a minute more).
func TestZZZClusterDomain(t *testing.T) {
	ctx := context.Background()
	if lab.stack == nil || lab.down || lab.stack.Lab.Cfg.ClusterDomain != clusterDomain {
		upWithDomain(t, ctx)
	}
	needLab(t, ns)
	t.Cleanup(func() {
		t0 := time.Now()
		if err := lab.stack.Down(ctx); err != nil {
			t.Errorf("down: %v", err)
		}
		lab.down = true
		t.Logf("lab down in %s", time.Since(t0).Round(10*time.Millisecond))
	})
	t0 := time.Now()
	if err := lab.stack.Swap(ctx, stack.ThawImages()); err != nil {
		t.Fatal(err)
	}
	t.Logf("Thaw swapped in (%s)", time.Since(t0).Round(10*time.Millisecond))

	const name = "domain"
	apply(t, ksvcYAML(name, "", "domain", map[string]string{"autoscaling.knative.dev/window": "6s"}, ""))
	if _, err := ksvc.WaitReady(ctx, lab.client, ns, name, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Knative's own controller found the domain in its pod's resolv.conf, as Thaw's components do.
	u, err := lab.client.Dynamic.Resource(schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}).
		Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if addr, _, _ := unstructured.NestedString(u.Object, "status", "address", "url"); addr != "http://"+name+"."+ns+".svc."+clusterDomain {
		t.Fatalf("ksvc address %q is not in %s", addr, clusterDomain)
	}
	waitRoutable(t, name)
	host := ksvc.Host(name, ns, stack.Domain)
	if resp, err := httpClient().Get(ctx, host, "/"); err != nil || resp.Status != 200 {
		t.Fatalf("warm request: %+v %v", resp, err)
	}

	// Scale to zero needs the probe of the activator through the cluster domain.
	t0 = time.Now()
	if err := kube.Poll(ctx, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, ready, err := ksvc.PodCounts(ctx, lab.client, ns, name)
		return err == nil && ready == 0 && activePods(ctx, t, name) == 0, nil
	}); err != nil || time.Since(t0) > 2*time.Minute {
		t.Fatalf("no scale to zero in %s: %v", time.Since(t0).Round(time.Second), err)
	}
	t.Logf("scaled to zero in %s", time.Since(t0).Round(time.Second))
	resp, err := httpClient().Get(ctx, host, "/")
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, "Hello domain!") {
		t.Fatalf("cold request: %+v %v", resp, err)
	}
	t.Logf("cold request: %d in %s", resp.Status, resp.Duration.Round(time.Millisecond))
}

// upWithDomain replaces the suite's lab with one whose cluster domain is clusterDomain.
func upWithDomain(t *testing.T, ctx context.Context) {
	t.Helper()
	if lab.stack != nil && !lab.down {
		if err := lab.stack.Down(ctx); err != nil {
			t.Fatalf("down: %v", err)
		}
		lab.down = true
	}
	cache, err := build.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	s, err := stack.Open(ctx, stack.Options{Cache: cache, Repo: lab.repo, Out: os.Stdout,
		Thaw: filepath.Join(cache, "lab-e2e", "thaw"), ClusterDomain: clusterDomain,
		Autoscaler: map[string]string{"scale-to-zero-grace-period": "6s"}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	lab.stack, lab.down = s, false
	lab.upErr = s.Up(ctx)
	if lab.upErr == nil {
		lab.client, lab.upErr = s.Lab.Client()
	}
	if lab.upErr != nil {
		t.Fatalf("lab up with cluster domain %s: %v\n%s", clusterDomain, lab.upErr, s.Diagnostics(ctx, "kube-system", "knative-serving"))
	}
	t.Logf("lab up with cluster domain %s in %s", clusterDomain, time.Since(t0).Round(10*time.Millisecond))
}
