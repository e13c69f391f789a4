package kingress

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgotesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netfake "knative.dev/networking/pkg/client/clientset/versioned/fake"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
	"knative.dev/pkg/apis"
)

var testLB = v1alpha1.LoadBalancerIngressStatus{DomainInternal: selfDomain}

type recFixture struct {
	rec    *Reconciler
	client *netfake.Clientset
	ings   cache.Indexer
	svcs   cache.Indexer
	proxy  *Proxy
}

func newRecFixture(t *testing.T, ings []*v1alpha1.Ingress, svcs ...*corev1.Service) *recFixture {
	t.Helper()
	objs := make([]runtime.Object, 0, len(ings))
	ingIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, ing := range ings {
		objs = append(objs, ing)
		if err := ingIdx.Add(ing); err != nil {
			t.Fatal(err)
		}
	}
	svcLister, svcIdx := lister(t, svcs...)
	client := netfake.NewSimpleClientset(objs...)
	proxy := NewProxy(ProxyOptions{Services: svcLister})
	rec := NewReconciler(ReconcilerOptions{
		Class:        IngressClass,
		Client:       client,
		Ingresses:    netlisters.NewIngressLister(ingIdx),
		Services:     svcLister,
		Publisher:    proxy,
		LoadBalancer: testLB,
		Logger:       zaptest.NewLogger(t).Sugar(),
	})
	return &recFixture{rec: rec, client: client, ings: ingIdx, svcs: svcIdx, proxy: proxy}
}

func (f *recFixture) reconcile(t *testing.T, ns, name string) {
	t.Helper()
	if err := f.rec.Reconcile(context.Background(), types.NamespacedName{Namespace: ns, Name: name}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
}

func (f *recFixture) status(t *testing.T, ns, name string) *v1alpha1.Ingress {
	t.Helper()
	ing, err := f.client.NetworkingV1alpha1().Ingresses(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ing
}

func (f *recFixture) routes(host string) bool {
	return f.proxy.Table().Match(host, httptest.NewRequest("GET", "http://"+host+"/", nil)) != nil
}

func (f *recFixture) statusUpdates() int {
	n := 0
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

func plainService(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt(8012)},
		}},
	}
}

func helloIngress() *v1alpha1.Ingress {
	ing := ingress("default", "hello",
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"hello.default.example.com"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("default", "hello-00001", 80, 100)}}),
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{"hello.default", "hello.default.svc", "hello.default.svc.cluster.local"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("default", "hello-00001", 80, 100)}}))
	ing.Generation = 3
	return ing
}

func TestReconcileMarksReady(t *testing.T) {
	f := newRecFixture(t, []*v1alpha1.Ingress{helloIngress()}, plainService("default", "hello-00001"))
	f.reconcile(t, "default", "hello")

	got := f.status(t, "default", "hello")
	if !got.IsReady() {
		t.Fatalf("ingress not ready: %+v", got.Status)
	}
	if got.Status.ObservedGeneration != 3 {
		t.Errorf("observedGeneration = %d, want 3", got.Status.ObservedGeneration)
	}
	for name, lb := range map[string]*v1alpha1.LoadBalancerStatus{"public": got.Status.PublicLoadBalancer, "private": got.Status.PrivateLoadBalancer} {
		if lb == nil || len(lb.Ingress) != 1 || lb.Ingress[0].DomainInternal != selfDomain {
			t.Errorf("%s load balancer = %+v, want DomainInternal %s", name, lb, selfDomain)
		}
	}
	for _, h := range []string{"hello.default.example.com", "hello.default", "hello.default.svc", "hello.default.svc.cluster.local"} {
		if !f.routes(h) {
			t.Errorf("no route for %s", h)
		}
	}

	// A second pass with an unchanged status writes nothing.
	if err := f.ings.Update(got); err != nil {
		t.Fatal(err)
	}
	before := f.statusUpdates()
	f.reconcile(t, "default", "hello")
	if n := f.statusUpdates() - before; n != 0 {
		t.Errorf("steady state wrote status %d times, want 0", n)
	}
}

func TestReconcileClassFilter(t *testing.T) {
	other := helloIngress()
	other.Name = "istio"
	other.Annotations = map[string]string{networking.IngressClassAnnotationKey: "istio.ingress.networking.knative.dev"}
	other.Spec.Rules[0].Hosts = []string{"istio.example.com"}
	other.Spec.Rules = other.Spec.Rules[:1]
	alt := helloIngress()
	alt.Name = "alt"
	alt.Annotations = map[string]string{networking.IngressClassAnnotationAltKey: IngressClass}
	alt.Spec.Rules[0].Hosts = []string{"alt.example.com"}
	alt.Spec.Rules = alt.Spec.Rules[:1]

	f := newRecFixture(t, []*v1alpha1.Ingress{other, alt}, plainService("default", "hello-00001"))
	f.reconcile(t, "default", "istio")
	f.reconcile(t, "default", "alt")
	if f.routes("istio.example.com") {
		t.Error("routed an Ingress of another class")
	}
	if got := f.status(t, "default", "istio"); len(got.Status.Conditions) != 0 {
		t.Errorf("touched status of another class: %+v", got.Status)
	}
	if !f.routes("alt.example.com") || !f.status(t, "default", "alt").IsReady() {
		t.Error("Ingress with the alternative class annotation not served")
	}

	// Switching class away drops the routes.
	moved := f.status(t, "default", "alt")
	moved.Annotations = map[string]string{networking.IngressClassAnnotationKey: "istio.ingress.networking.knative.dev"}
	if err := f.ings.Update(moved); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, "default", "alt")
	if f.routes("alt.example.com") {
		t.Error("routes kept after the class changed")
	}
}

func TestReconcileDeleteRemovesRoutes(t *testing.T) {
	ing := helloIngress()
	f := newRecFixture(t, []*v1alpha1.Ingress{ing}, plainService("default", "hello-00001"))
	f.reconcile(t, "default", "hello")
	if !f.routes("hello.default.example.com") {
		t.Fatal("route missing before delete")
	}
	if err := f.ings.Delete(ing); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, "default", "hello")
	if f.routes("hello.default.example.com") {
		t.Error("route kept after delete")
	}

	// An Ingress being deleted (DeletionTimestamp set) stops routing too.
	f2 := newRecFixture(t, []*v1alpha1.Ingress{helloIngress()}, plainService("default", "hello-00001"))
	f2.reconcile(t, "default", "hello")
	dying := helloIngress()
	dying.DeletionTimestamp = &metav1.Time{}
	if err := f2.ings.Update(dying); err != nil {
		t.Fatal(err)
	}
	f2.reconcile(t, "default", "hello")
	if f2.routes("hello.default.example.com") {
		t.Error("route kept for an Ingress being deleted")
	}
}

func TestReconcileBadInput(t *testing.T) {
	zero := ingress("default", "zero", rule("", []string{"zero.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("default", "a", 80, 0), split("default", "b", 80, 0)}}))
	cases := []struct {
		name string
		ing  *v1alpha1.Ingress
		host string
	}{
		{"no rules", ingress("default", "empty"), ""},
		{"zero percents", zero, "zero.example.com"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newRecFixture(t, []*v1alpha1.Ingress{c.ing})
			f.reconcile(t, c.ing.Namespace, c.ing.Name)
			got := f.status(t, c.ing.Namespace, c.ing.Name)
			cond := got.Status.GetCondition(v1alpha1.IngressConditionNetworkConfigured)
			if cond == nil || !cond.IsFalse() || cond.Reason != ReasonInvalidSpec || cond.Message == "" {
				t.Errorf("NetworkConfigured = %+v, want False/%s with a message", cond, ReasonInvalidSpec)
			}
			if got.IsReady() || got.Status.GetCondition(apis.ConditionReady).IsTrue() {
				t.Error("invalid Ingress marked ready")
			}
			if c.host != "" && f.routes(c.host) {
				t.Error("invalid Ingress routed")
			}
		})
	}
}

func TestReconcileWaitsForService(t *testing.T) {
	f := newRecFixture(t, []*v1alpha1.Ingress{helloIngress()})
	f.reconcile(t, "default", "hello")

	got := f.status(t, "default", "hello")
	lbc := got.Status.GetCondition(v1alpha1.IngressConditionLoadBalancerReady)
	if got.IsReady() || lbc == nil || !lbc.IsUnknown() || lbc.Reason != ReasonServiceNotReady {
		t.Fatalf("LoadBalancerReady = %+v, want Unknown/%s", lbc, ReasonServiceNotReady)
	}
	if !got.Status.GetCondition(v1alpha1.IngressConditionNetworkConfigured).IsTrue() {
		t.Error("NetworkConfigured should be True: routes are programmed")
	}
	if !f.routes("hello.default.example.com") {
		t.Error("routes should be published while the backend is pending")
	}
	svc := types.NamespacedName{Namespace: "default", Name: "hello-00001"}
	if w := f.rec.WaitingOn(svc); len(w) != 1 || w[0].Name != "hello" {
		t.Fatalf("WaitingOn(%s) = %v, want [default/hello]", svc, w)
	}

	// The Service appears: the next pass marks it ready and stops waiting.
	if err := f.svcs.Add(plainService("default", "hello-00001")); err != nil {
		t.Fatal(err)
	}
	if err := f.ings.Update(got); err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, "default", "hello")
	if !f.status(t, "default", "hello").IsReady() {
		t.Error("not ready after the Service appeared")
	}
	if w := f.rec.WaitingOn(svc); len(w) != 0 {
		t.Errorf("still waiting: %v", w)
	}
}

func TestReconcileStatusUpdateError(t *testing.T) {
	f := newRecFixture(t, []*v1alpha1.Ingress{helloIngress()}, plainService("default", "hello-00001"))
	f.client.PrependReactor("update", "ingresses", func(a clientgotesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("apiserver says no")
	})
	err := f.rec.Reconcile(context.Background(), types.NamespacedName{Namespace: "default", Name: "hello"})
	if err == nil {
		t.Fatal("Reconcile ignored a failed status update")
	}
	// Routing does not depend on the status write.
	if !f.routes("hello.default.example.com") {
		t.Error("route missing")
	}
}
