//go:build e2e

package swap

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/lab/build"
)

// TestSwapOnRealAPIServer runs the swap against a real kube-apiserver, etcd and the Deployment and
// ReplicaSet controllers on loopback (the lab's own builds, no node, no root, no lab): upstream's two
// Deployments installed client-side with kubectl, then Swap, Unswap, `kubectl apply -k` of the overlay
// and `kubectl apply -f` of upstream's again. After each step both Deployments are, as JSON bytes, what
// they were before except for the image (and the annotations each step owns). A stand-in kubelet binds
// the pods and reports them ready, so rollouts complete as on a cluster.
//
//	go test -tags e2e -run TestSwapOnRealAPIServer -v ./pkg/swap/
func TestSwapOnRealAPIServer(t *testing.T) {
	cache, err := build.DefaultCacheDir()
	if err != nil {
		testutil.SkipOutsideCI(t, "%v", err)
	}
	bin := filepath.Join(cache, "k8s-"+build.KubernetesVersion, "bin")
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			testutil.SkipOutsideCI(t, "%s not built (thaw lab up builds it): %v", b, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	kubeconfig, kc := controlPlane(ctx, t, bin, dir)
	go hollowKubelet(ctx, kc)

	for _, o := range []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "activator", Namespace: Namespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "controller", Namespace: Namespace}},
	} {
		var err error
		switch o := o.(type) {
		case *corev1.Namespace:
			_, err = kc.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = kc.CoreV1().ServiceAccounts(Namespace).Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	kubectl := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Upstream's manifests with release-like image references, client-side applied as Knative's docs say.
	upstream := Images{"activator": "registry.example/knative/activator", "autoscaler": "registry.example/knative/autoscaler"}
	var docs []string
	for _, f := range []string{"activator.yaml", "autoscaler.yaml"} {
		b, err := os.ReadFile(filepath.Join("../../config/upstream/serving-v0.50.0", f))
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, strings.ReplaceAll(string(b), "ko://knative.dev/serving/cmd/", "registry.example/knative/")+"\n---\n")
	}
	manifest := filepath.Join(dir, "upstream.yaml")
	if err := os.WriteFile(manifest, []byte(strings.Join(docs, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{Timeout: time.Minute, Interval: 200 * time.Millisecond}
	kubectl("apply", "-f", manifest)
	if err := Wait(ctx, kc, upstream, o); err != nil {
		t.Fatal(err)
	}
	before := liveState(ctx, t, kc)

	// The command line, as a user runs it: images from the overlay, then back.
	thawBin := filepath.Join(dir, "thaw")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", thawBin, "../../cmd/thaw").CombinedOutput(); err != nil {
		t.Fatalf("build thaw: %v\n%s", err, out)
	}
	thaw := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, thawBin, append(args, "--kubeconfig", kubeconfig)...).CombinedOutput()
		if err != nil {
			t.Fatalf("thaw %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("thaw %s:\n%s", strings.Join(args, " "), out)
	}
	lab := Images{"activator": "ko.local/thaw/activator:dev", "autoscaler": "ko.local/thaw/autoscaler:dev"}
	thaw("swap")
	if cur, err := Current(ctx, kc, ""); err != nil || cur["activator"] != (State{lab["activator"], upstream["activator"], lab["activator"]}) {
		t.Fatalf("after thaw swap: %v, %v", cur, err)
	}
	compare(t, "after thaw swap", before, liveState(ctx, t, kc), true, Annotation, AnnotationTo)
	// The library, swapping twice: unswap still goes back to upstream's.
	if _, err := Swap(ctx, kc, Images{"activator": "registry.example/thaw/activator:v2"}, o); err != nil {
		t.Fatal(err)
	}
	thaw("unswap")
	compare(t, "after thaw unswap", before, liveState(ctx, t, kc), false)

	// The overlay over the client-side install: whole Deployments, nothing dropped by the three-way merge.
	kubectl("apply", "-k", "../../config/overlays/thaw")
	if err := Wait(ctx, kc, lab, o); err != nil {
		t.Fatal(err)
	}
	compare(t, "after kubectl apply -k", before, liveState(ctx, t, kc), true, "kubectl.kubernetes.io/last-applied-configuration")
	kubectl("apply", "-f", manifest)
	if err := Wait(ctx, kc, upstream, o); err != nil {
		t.Fatal(err)
	}
	compare(t, "after kubectl apply -f upstream", before, liveState(ctx, t, kc), false)

	// The control: the partial Deployment the overlay used to hold, client-side applied over this
	// install, is what the three-way merge breaks (it deletes the selector, which is immutable).
	partial := filepath.Join(dir, "partial.yaml")
	if err := os.WriteFile(partial, []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: activator, namespace: knative-serving}
spec:
  template:
    spec:
      containers: [{name: activator, image: registry.example/thaw/activator:dev}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), "--kubeconfig", kubeconfig, "apply", "-f", partial).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "field is immutable") {
		t.Errorf("a partial Deployment applied client-side: %v\n%s", err, out)
	}
	compare(t, "after the refused partial apply", before, liveState(ctx, t, kc), false)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// daemon starts a process that the test ends (and waits for) at cleanup.
func daemon(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("%s log tail:\n%s", filepath.Base(name), b)
		}
	})
}

// controlPlane starts etcd, kube-apiserver (a static token, AlwaysAllow: loopback only) and the
// Deployment and ReplicaSet controllers, and returns a kubeconfig and a client.
func controlPlane(ctx context.Context, t *testing.T, bin, dir string) (string, kubernetes.Interface) {
	t.Helper()
	etcdClient, etcdPeer, apiPort := freePort(t), freePort(t), freePort(t)
	daemon(t, dir, filepath.Join(bin, "etcd"), "--data-dir", filepath.Join(dir, "etcd"), "--name", "default",
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", etcdPeer), "--listen-metrics-urls", "")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "sa.key")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte("swap-test-token,admin,admin,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	daemon(t, dir, filepath.Join(bin, "kube-apiserver"), "--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(apiPort), "--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", keyPath,
		"--service-account-signing-key-file", keyPath, "--authorization-mode", "AlwaysAllow", "--token-auth-file", tokens,
		"--endpoint-reconciler-type", "none",
		"--service-cluster-ip-range", "10.233.0.0/24", "--advertise-address", "127.0.0.1")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	kcfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: swap-test-token}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, apiPort)
	if err := os.WriteFile(kubeconfig, []byte(kcfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		body, err := kc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		if err == nil && string(body) == "ok" {
			break
		}
		select {
		case <-rctx.Done():
			t.Fatalf("apiserver not ready: %v %s", err, body)
		case <-time.After(200 * time.Millisecond):
		}
	}
	daemon(t, dir, filepath.Join(bin, "kube-controller-manager"), "--kubeconfig", kubeconfig,
		"--controllers", "deployment,replicaset", "--leader-elect=false", "--secure-port", "0",
		"--use-service-account-credentials=false")
	return kubeconfig, kc
}

// hollowKubelet stands in for a node: it binds every pending pod, reports it running and ready, and
// finishes deletions at once (no kubelet would).
func hollowKubelet(ctx context.Context, kc kubernetes.Interface) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pods, err := kc.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			switch {
			case p.DeletionTimestamp != nil:
				zero := int64(0)
				_ = kc.CoreV1().Pods(Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			case p.Spec.NodeName == "":
				_ = kc.CoreV1().Pods(Namespace).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name},
					Target: corev1.ObjectReference{Kind: "Node", Name: "hollow"}}, metav1.CreateOptions{})
			case p.Status.Phase != corev1.PodRunning:
				now := metav1.Now()
				p.Status.Phase = corev1.PodRunning
				p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}
				for _, c := range p.Spec.Containers {
					p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true,
						State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
				}
				_, _ = kc.CoreV1().Pods(Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			}
		}
	}
}

// liveState is both Deployments as JSON-ready maps, without what the API server and the Deployment
// controller keep for themselves (resourceVersion, generation, managedFields, the revision annotation,
// status).
func liveState(ctx context.Context, t *testing.T, kc kubernetes.Interface) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, c := range Components {
		d, err := kc.AppsV1().Deployments(Namespace).Get(ctx, c, metav1.GetOptions{})
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

// compare fails when a Deployment's JSON differs beyond its container's image (when withoutImage) and
// the named annotations.
func compare(t *testing.T, when string, before, after map[string]map[string]any, withoutImage bool, annotations ...string) {
	t.Helper()
	for _, c := range Components {
		b, a := jsonOf(t, before[c], c, withoutImage, annotations), jsonOf(t, after[c], c, withoutImage, annotations)
		if b != a {
			t.Errorf("%s: deployment %s changed beyond the image:\nbefore: %s\nafter:  %s", when, c, b, a)
		}
	}
}

func jsonOf(t *testing.T, u map[string]any, container string, withoutImage bool, annotations []string) string {
	t.Helper()
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
