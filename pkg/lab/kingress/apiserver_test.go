package kingress

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
)

// TestRealAPIServer runs the ingress against a real apiserver that has the
// KIngress CRD (THAW_TEST_KUBECONFIG names its kubeconfig; skipped
// otherwise). It checks what fakes cannot: the status subresource accepts
// our status, and the Service and EndpointSlice pass validation. It uses a
// class and namespace of its own so it never touches a running lab's
// ingress, and sends no request that would be proxied off loopback.
func TestRealAPIServer(t *testing.T) {
	kc := os.Getenv("THAW_TEST_KUBECONFIG")
	if kc == "" {
		t.Skip("THAW_TEST_KUBECONFIG not set")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	kube := kubernetes.NewForConfigOrDie(cfg)
	netc := netclientset.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	suffix := rand.String(5)
	ns := "kingress-test-" + suffix
	class := "test-" + suffix + ".ingress.thaw.dev"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hello-00001"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt(8012)},
		}},
	}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ing := ingress(ns, "hello",
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"hello." + ns + ".example.com"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split(ns, "hello-00001", 80, 100)}}),
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{"hello." + ns, "hello." + ns + ".svc.cluster.local"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split(ns, "hello-00001", 80, 100)}}))
	ing.Annotations[networking.IngressClassAnnotationKey] = class
	if _, err := netc.NetworkingV1alpha1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := ingress(ns, "bad", rule("", []string{"bad.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split(ns, "a", 80, 0), split(ns, "b", 80, 0)}}))
	bad.Annotations[networking.IngressClassAnnotationKey] = class
	// The CRD schema may refuse this; either way it must not break the run.
	_, badErr := netc.NetworkingV1alpha1().Ingresses(ns).Create(ctx, bad, metav1.CreateOptions{})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- RunWithClients(rctx, kube, netc, Options{
			Listener: ln, AdvertiseIP: "10.88.0.1", Class: class,
			Namespace: ns, ServiceName: "ingress",
			Logger: zaptest.NewLogger(t).Sugar(),
		})
	}()
	defer func() {
		rcancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	waitFor(t, "ingress ready", func() bool {
		got, err := netc.NetworkingV1alpha1().Ingresses(ns).Get(ctx, "hello", metav1.GetOptions{})
		return err == nil && got.IsReady()
	})
	got, _ := netc.NetworkingV1alpha1().Ingresses(ns).Get(ctx, "hello", metav1.GetOptions{})
	if d := got.Status.PublicLoadBalancer.Ingress[0].DomainInternal; d != fmt.Sprintf("ingress.%s.svc.cluster.local", ns) {
		t.Errorf("DomainInternal = %q", d)
	}
	if badErr == nil {
		waitFor(t, "bad ingress marked", func() bool {
			b, err := netc.NetworkingV1alpha1().Ingresses(ns).Get(ctx, "bad", metav1.GetOptions{})
			c := b.Status.GetCondition(v1alpha1.IngressConditionNetworkConfigured)
			return err == nil && c != nil && c.Reason == ReasonInvalidSpec
		})
	} else {
		t.Logf("apiserver refused the bad ingress: %v", badErr)
	}
	waitFor(t, "load balancer objects", func() bool {
		s, err1 := kube.CoreV1().Services(ns).Get(ctx, "ingress", metav1.GetOptions{})
		_, err2 := kube.DiscoveryV1().EndpointSlices(ns).Get(ctx, "ingress", metav1.GetOptions{})
		return err1 == nil && err2 == nil && s.Spec.ClusterIP != ""
	})

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown host: %d, want 404", resp.StatusCode)
	}
}
