package kingress

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clientgotesting "k8s.io/client-go/testing"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netfake "knative.dev/networking/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
)

// watchStarted makes the fake's watches signal once they are established,
// so the test never creates an object in the gap between list and watch.
func watchStarted(f *clientgotesting.Fake, tracker clientgotesting.ObjectTracker, resource string) <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	f.PrependWatchReactor(resource, func(a clientgotesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if wa, ok := a.(clientgotesting.WatchActionImpl); ok {
			opts = wa.ListOptions
		}
		w, err := tracker.Watch(a.GetResource(), a.GetNamespace(), opts)
		once.Do(func() { close(ch) })
		return true, w, err
	})
	return ch
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}

func TestRunEndToEnd(t *testing.T) {
	be := echoBackend(t, "hello")
	svc := serviceFor(t, "default", "hello-00001", "http", be)
	ing := ingress("default", "hello", rule("", []string{"hello.default.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("default", "hello-00001", servicePort(t, svc), 100)},
	}))

	kube := kubefake.NewClientset(svc)
	netc := netfake.NewSimpleClientset(ing)
	svcWatch := watchStarted(&kube.Fake, kube.Tracker(), "services")
	ingWatch := watchStarted(&netc.Fake, netc.Tracker(), "ingresses")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- RunWithClients(ctx, kube, netc, Options{
			Listener: ln,
			// Data only: the fake apiserver stores it, nothing dials it.
			AdvertiseIP: "10.88.0.1",
			Logger:      zaptest.NewLogger(t).Sugar(),
			Ready:       func(a net.Addr) { ready <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Run ended early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run never became ready")
	}
	<-svcWatch
	<-ingWatch
	url := "http://" + addr.String() + "/"

	getIng := func(name string) *v1alpha1.Ingress {
		got, err := netc.NetworkingV1alpha1().Ingresses("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	waitFor(t, "ingress ready", func() bool { return getIng("hello").IsReady() })
	if lb := getIng("hello").Status.PrivateLoadBalancer; lb == nil || lb.Ingress[0].DomainInternal != "thaw-ingress.thaw-system.svc.cluster.local" {
		t.Errorf("private LB = %+v", lb)
	}

	send := func(client *http.Client, host string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	if code, body := send(client, "hello.default.example.com"); code != 200 || !strings.Contains(body, "rev=hello-00001 ns=default") {
		t.Fatalf("through the ingress: %d %q", code, body)
	}
	// The listener also takes prior-knowledge h2c (gRPC clients).
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2.CloseIdleConnections)
	if code, body := send(&http.Client{Transport: h2}, "hello.default.example.com"); code != 200 || !strings.HasPrefix(body, "hello ") {
		t.Errorf("h2c client: %d %q", code, body)
	}

	// The in-cluster face: Service without selector plus an EndpointSlice to
	// the advertised address and the real listener port.
	waitFor(t, "load balancer service", func() bool {
		_, err := kube.DiscoveryV1().EndpointSlices(DefaultNamespace).Get(ctx, DefaultServiceName, metav1.GetOptions{})
		return err == nil
	})
	lbSvc, err := kube.CoreV1().Services(DefaultNamespace).Get(ctx, DefaultServiceName, metav1.GetOptions{})
	if err != nil || len(lbSvc.Spec.Selector) != 0 || lbSvc.Spec.Ports[0].Port != 80 {
		t.Errorf("load balancer service = %+v, %v", lbSvc, err)
	}
	slice, _ := kube.DiscoveryV1().EndpointSlices(DefaultNamespace).Get(ctx, DefaultServiceName, metav1.GetOptions{})
	if slice.Endpoints[0].Addresses[0] != "10.88.0.1" || int(*slice.Ports[0].Port) != addr.(*net.TCPAddr).Port {
		t.Errorf("endpointslice = %+v", slice)
	}

	// An Ingress whose backend does not exist yet waits, then turns ready
	// when the Service appears.
	late := ingress("default", "late", rule("", []string{"late.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("default", "late-00001", servicePort(t, svc), 100)},
	}))
	if _, err := netc.NetworkingV1alpha1().Ingresses("default").Create(ctx, late, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "late ingress waiting", func() bool {
		c := getIng("late").Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady)
		return c != nil && c.Reason == ReasonServiceNotReady
	})
	if code, _ := send(client, "late.example.com"); code != http.StatusServiceUnavailable {
		t.Errorf("late host before its Service: %d, want 503", code)
	}
	lateSvc := svc.DeepCopy()
	lateSvc.Name = "late-00001"
	if _, err := kube.CoreV1().Services("default").Create(ctx, lateSvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "late ingress ready", func() bool { return getIng("late").IsReady() })
	if code, _ := send(client, "late.example.com"); code != 200 {
		t.Errorf("late host after its Service: %d, want 200", code)
	}

	// Deleting the Ingress removes its host.
	if err := netc.NetworkingV1alpha1().Ingresses("default").Delete(ctx, "hello", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route removal", func() bool {
		code, _ := send(client, "hello.default.example.com")
		return code == http.StatusNotFound
	})
}

func TestRunRejectsBadListenAddr(t *testing.T) {
	err := RunWithClients(context.Background(), kubefake.NewClientset(), netfake.NewSimpleClientset(), Options{})
	if err == nil {
		t.Fatal("Run without an address succeeded")
	}
	err = RunWithClients(context.Background(), kubefake.NewClientset(), netfake.NewSimpleClientset(), Options{ListenAddr: "256.0.0.1:80"})
	if err == nil {
		t.Fatal("Run with an invalid address succeeded")
	}
}

func TestEnsureLoadBalancer(t *testing.T) {
	ctx := context.Background()
	lb := LoadBalancer{Namespace: "thaw-system", Name: "thaw-ingress", IP: "10.88.0.1", Port: 8080}
	kube := kubefake.NewClientset()
	for i := range 2 { // idempotent
		if err := EnsureLoadBalancer(ctx, kube, lb); err != nil {
			t.Fatalf("pass %d: %v", i, err)
		}
	}
	// Drift (someone edits the slice) is repaired.
	slice, _ := kube.DiscoveryV1().EndpointSlices("thaw-system").Get(ctx, "thaw-ingress", metav1.GetOptions{})
	slice.Endpoints[0].Addresses = []string{"10.88.0.99"}
	if _, err := kube.DiscoveryV1().EndpointSlices("thaw-system").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, _ := kube.CoreV1().Services("thaw-system").Get(ctx, "thaw-ingress", metav1.GetOptions{})
	svc.Spec.Selector = map[string]string{"app": "x"}
	if _, err := kube.CoreV1().Services("thaw-system").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := EnsureLoadBalancer(ctx, kube, lb); err != nil {
		t.Fatal(err)
	}
	slice, _ = kube.DiscoveryV1().EndpointSlices("thaw-system").Get(ctx, "thaw-ingress", metav1.GetOptions{})
	if got := slice.Endpoints[0].Addresses[0]; got != "10.88.0.1" || *slice.Ports[0].Port != 8080 {
		t.Errorf("slice not repaired: %v port %d", got, *slice.Ports[0].Port)
	}
	svc, _ = kube.CoreV1().Services("thaw-system").Get(ctx, "thaw-ingress", metav1.GetOptions{})
	if len(svc.Spec.Selector) != 0 || svc.Spec.Ports[0].TargetPort.IntValue() != 8080 {
		t.Errorf("service not repaired: %+v", svc.Spec)
	}
	if _, err := kube.CoreV1().Namespaces().Get(ctx, "thaw-system", metav1.GetOptions{}); err != nil {
		t.Errorf("namespace: %v", err)
	}

	for _, bad := range []LoadBalancer{
		{Namespace: "n", Name: "s", IP: "127.0.0.1", Port: 80},
		{Namespace: "n", Name: "s", IP: "0.0.0.0", Port: 80},
		{Namespace: "n", Name: "s", IP: "not-an-ip", Port: 80},
		{Namespace: "n", Name: "s", IP: "10.0.0.1", Port: 0},
		{Name: "s", IP: "10.0.0.1", Port: 80},
	} {
		if err := EnsureLoadBalancer(ctx, kubefake.NewClientset(), bad); err == nil {
			t.Errorf("EnsureLoadBalancer(%+v) accepted", bad)
		}
	}
}
