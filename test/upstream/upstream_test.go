//go:build e2e

package upstream

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/lab/images"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// The suites' images: a registry the controller does not resolve tags for (config-deployment's
// registries-skipping-tag-resolving holds ko.local), and a tag other than latest (pull policy
// IfNotPresent: the node has them, nothing is pulled).
const (
	dockerRepo       = images.Registry + "/knative-test"
	imageTag         = "e2e"
	gatewayNamespace = SystemNamespace
	gatewayName      = "upstream-tests-gateway"
)

// TestUpstreamSuites runs upstream's suites for each side, shape and suite the environment selects
// (THAW_UPSTREAM_SIDES, THAW_UPSTREAM_SHAPES, THAW_UPSTREAM_SUITES), then puts the cluster back as
// it found it: images, replicas, the activator's HPA and config-leader-election.
func TestUpstreamSuites(t *testing.T) {
	if env.upErr != nil {
		t.Fatal("lab not up:", env.upErr)
	}
	sides, err := ParseSides(os.Getenv("THAW_UPSTREAM_SIDES"))
	if err != nil {
		t.Fatal(err)
	}
	shapes, err := ParseShapes(os.Getenv("THAW_UPSTREAM_SHAPES"))
	if err != nil {
		t.Fatal(err)
	}
	suites, err := ParseSuites(os.Getenv("THAW_UPSTREAM_SUITES"))
	if err != nil {
		t.Fatal(err)
	}
	artifacts := os.Getenv("THAW_UPSTREAM_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(env.lab.Repo, "bin", "upstream")
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	s := env.lab.Stack

	bins := prepare(ctx, t, suites)
	cl := &Cluster{Kube: env.client.Kube, Clock: clock.RealClock{}, Logf: t.Logf}
	if err := cl.EnsureGateway(ctx, gatewayNamespace, gatewayName); err != nil {
		t.Fatal("gateway service:", err)
	}
	saved, err := cl.Save(ctx)
	if err != nil {
		t.Fatal(err)
	}
	qpCPU := os.Getenv("THAW_UPSTREAM_QP_CPU")
	if qpCPU == "" {
		qpCPU = "1m"
	}
	if err := cl.SetQueueCPURequest(ctx, qpCPU); err != nil {
		t.Fatal(err)
	}
	before, err := swap.Current(ctx, env.client.Kube)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := s.Swap(ctx, before); err != nil {
			t.Errorf("restore images %v: %v", before, err)
		}
		if err := cl.Restore(ctx, saved, 3*time.Minute); err != nil {
			t.Errorf("restore shape: %v", err)
		}
	})
	target := Target{
		Kubeconfig: s.Lab.Cfg.Kubeconfig(), IngressEndpoint: s.Lab.Cfg.BridgeIP,
		DockerRepo: dockerRepo, Tag: imageTag,
		GatewayNamespace: gatewayNamespace, Gateway: gatewayName, SystemNamespace: SystemNamespace,
	}

	var rows []Row
	for _, side := range sides {
		im := stack.UpstreamImages()
		if side == SideThaw {
			im = stack.ThawImages()
		}
		ts := time.Now()
		if err := s.Swap(ctx, im); err != nil {
			t.Errorf("%s: swap: %v", side, err)
			continue
		}
		t.Logf("%s: swapped in (%s)", side, time.Since(ts).Round(time.Second))
		for _, sh := range shapes {
			tsh := time.Now()
			if err := cl.ApplyShape(ctx, sh); err != nil {
				t.Errorf("%s %s: %v", side, sh, err)
				continue
			}
			if err := cl.WaitShape(ctx, sh, im, 4*time.Minute); err != nil {
				t.Errorf("%s %s: %v\n%s", side, sh, err, s.Diagnostics(ctx, SystemNamespace))
				continue
			}
			t.Logf("%s %s: %d autoscaler and activator replicas Ready, %d bucket leases held (%s)",
				side, sh, sh.Replicas, sh.Buckets, time.Since(tsh).Round(time.Second))
			for _, su := range suites {
				name := fmt.Sprintf("%s_%s_%s", side, sh, su.Name)
				t.Run(name, func(t *testing.T) {
					res := runOne(ctx, t, bins[su.Name], su, sh, target, filepath.Join(artifacts, name+".log"))
					for _, r := range res {
						rows = append(rows, Row{Side: side, Shape: sh.String(), Suite: su.Name, Result: r})
					}
					if side == SideThaw && (t.Failed() || len(Diverging(rowsOf(rows, side, sh, su))) > 0) {
						dumpAutoscalerLogs(ctx, t, filepath.Join(artifacts, name+"-autoscaler.log"))
					}
				})
			}
		}
	}
	report := Summary(rows, time.Since(t0))
	if d := Diverging(rows); len(d) > 0 {
		report += "\nPassed with upstream's components, not with Thaw's:\n"
		for _, r := range d {
			report += fmt.Sprintf("- %s %s %s: %s\n", r.Shape, r.Suite, r.Test, r.Status)
		}
	}
	t.Logf("upstream suites:\n%s", report)
	if err := os.WriteFile(filepath.Join(artifacts, "report.md"), []byte(report), 0o644); err != nil {
		t.Error(err)
	}
}

// rowsOf keeps the rows of one shape and suite, both sides (Diverging compares them).
func rowsOf(rows []Row, side string, sh Shape, su Suite) []Row {
	var out []Row
	for _, r := range rows {
		if r.Shape == sh.String() && r.Suite == su.Name {
			out = append(out, r)
		}
	}
	return out
}

// prepare compiles the suites (cached by module version), builds and imports the test images and
// applies upstream's test namespaces and resources.
func prepare(ctx context.Context, t *testing.T, suites []Suite) map[string]string {
	t.Helper()
	t0 := time.Now()
	s := env.lab.Stack
	tools := filepath.Join(env.lab.Repo, ToolsModule)
	mod, err := ResolveModule(ctx, tools, ServingModule)
	if err != nil {
		t.Fatal(err)
	}
	b := Builder{ToolsDir: tools, CacheDir: CacheDirFor(env.lab.Cache, mod.Version), Out: os.Stdout}
	bins := map[string]string{}
	for _, su := range suites {
		bin, err := b.SuiteBinary(ctx, su)
		if err != nil {
			t.Fatal(err)
		}
		bins[su.Name] = bin
	}
	t.Logf("suites compiled (%s)", time.Since(t0).Round(time.Second))
	refs, err := b.TestImages(ctx, TestImages, dockerRepo, imageTag, filepath.Join(env.lab.Cache, "images"))
	if err != nil {
		t.Fatal(err)
	}
	if err := images.ImportAll(ctx, s.Paths.Ctr, s.Lab.Cfg.ContainerdSock(), refs, os.Stdout); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"cluster-resources.yaml", "test-resources.yaml"} {
		data, err := os.ReadFile(filepath.Join(mod.Dir, "test", "config", f))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kube.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		err = env.client.Apply(actx, objs)
		cancel()
		if err != nil {
			t.Fatalf("apply %s: %v", f, err)
		}
	}
	t.Logf("%s %s: suites, test images and test resources ready (%s)", mod.Path, mod.Version, time.Since(t0).Round(time.Second))
	return bins
}

// runOne runs one suite binary, streaming to stdout and to logPath, logs each test's verdict and
// fails t when the binary fails.
func runOne(ctx context.Context, t *testing.T, bin string, su Suite, sh Shape, tg Target, logPath string) []Result {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, su.Timeout+time.Minute)
	defer cancel()
	res, err := RunSuite(rctx, bin, tg.Args(su, sh), tg.Env(os.Environ()), filepath.Dir(bin), io.MultiWriter(os.Stdout, f))
	for _, r := range res {
		t.Logf("%-5s %-40s %s", r.Status, r.Test, r.Duration.Round(10*time.Millisecond))
	}
	if err != nil {
		t.Errorf("%s failed after %s: %v (log: %s)", su.Name, time.Since(t0).Round(time.Second), err, logPath)
	}
	if len(res) == 0 {
		t.Errorf("%s ran no test (filter %q)", su.Name, su.Run)
	}
	return res
}

// dumpAutoscalerLogs writes every autoscaler pod's whole log, each line prefixed with its pod (as
// kubectl logs -l app=autoscaler --prefix --tail=-1), to path.
func dumpAutoscalerLogs(ctx context.Context, t *testing.T, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pods, err := env.client.Kube.CoreV1().Pods(SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + Autoscaler})
	if err != nil {
		t.Logf("autoscaler logs: %v", err)
		return
	}
	var b strings.Builder
	for _, p := range pods.Items {
		raw, err := env.client.Kube.CoreV1().Pods(SystemNamespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: Autoscaler}).DoRaw(ctx)
		if err != nil {
			fmt.Fprintf(&b, "[pod/%s] logs: %v\n", p.Name, err)
			continue
		}
		for _, l := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
			fmt.Fprintf(&b, "[pod/%s/%s] %s\n", p.Name, Autoscaler, l)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Logf("autoscaler logs: %v", err)
		return
	}
	t.Logf("autoscaler logs of %d pods: %s", len(pods.Items), path)
}
