package kingress

import (
	"context"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netcfg "knative.dev/networking/pkg/config"
	apicfg "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	routecfg "knative.dev/serving/pkg/reconciler/route/config"
	"knative.dev/serving/pkg/reconciler/route/resources"
	"knative.dev/serving/pkg/reconciler/route/traffic"
)

// upstreamContext is the config the route reconciler runs with on the lab:
// config-domain example.com, our ingress class, no internal TLS.
func upstreamContext() context.Context {
	defaults, _ := apicfg.NewDefaultsConfigFromMap(nil)
	ctx := apicfg.ToContext(context.Background(), &apicfg.Config{Defaults: defaults})
	return routecfg.ToContext(ctx, &routecfg.Config{
		Domain: &routecfg.Domain{Domains: map[string]routecfg.DomainConfig{"example.com": {}}},
		Network: &netcfg.Config{
			DefaultIngressClass: IngressClass,
			DomainTemplate:      netcfg.DefaultDomainTemplate,
			TagTemplate:         netcfg.DefaultTagTemplate,
			SystemInternalTLS:   netcfg.EncryptionDisabled,
			HTTPProtocol:        netcfg.HTTPEnabled,
		},
		Features: &apicfg.Features{TagHeaderBasedRouting: apicfg.Disabled},
	})
}

func revTarget(rev string, percent int64) traffic.RevisionTarget {
	return traffic.RevisionTarget{TrafficTarget: servingv1.TrafficTarget{
		ConfigurationName: "hello", RevisionName: rev, Percent: ptr.To(percent), LatestRevision: ptr.To(false),
	}}
}

// TestUpstreamRouteIngress feeds the KIngress that upstream's route
// reconciler builds for a split, tagged Route through the reconciler and the
// proxy, and checks that upstream reads our status back as a ready Route
// with a placeholder Service pointing at our load balancer.
func TestUpstreamRouteIngress(t *testing.T) {
	ctx := upstreamContext()
	route := &servingv1.Route{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hello", UID: "1234"}}
	tc := &traffic.Config{Targets: map[string]traffic.RevisionTargets{
		traffic.DefaultTarget: {revTarget("hello-00001", 30), revTarget("hello-00002", 70)},
		"blue":                {revTarget("hello-00001", 100)},
	}}
	ing, err := resources.MakeIngress(ctx, route, tc, nil, IngressClass)
	if err != nil {
		t.Fatal(err)
	}
	ing.Generation = 1

	b1, b2 := echoBackend(t, "one"), echoBackend(t, "two")
	s1, s2 := serviceFor(t, "default", "hello-00001", "http", b1), serviceFor(t, "default", "hello-00002", "http", b2)
	// Upstream addresses the public Services on port 80; ours listen on
	// loopback ports, so point the splits at them.
	for i := range ing.Spec.Rules {
		for j := range ing.Spec.Rules[i].HTTP.Paths {
			for k := range ing.Spec.Rules[i].HTTP.Paths[j].Splits {
				sp := &ing.Spec.Rules[i].HTTP.Paths[j].Splits[k]
				if sp.ServicePort.IntValue() != 80 {
					t.Fatalf("upstream split port %s, want 80", sp.ServicePort.String())
				}
				sp.ServicePort.IntVal = int32(servicePort(t, map[string]*corev1.Service{"hello-00001": s1, "hello-00002": s2}[sp.ServiceName]))
			}
		}
	}

	f := newRecFixture(t, []*v1alpha1.Ingress{ing}, s1, s2)
	f.reconcile(t, "default", ing.Name)
	got := f.status(t, "default", ing.Name)
	if !got.IsReady() {
		t.Fatalf("upstream-built ingress not ready: %+v", got.Status)
	}

	// Upstream's view of our status.
	var rs servingv1.RouteStatus
	rs.InitializeConditions()
	rs.PropagateIngressStatus(got.Status)
	if c := rs.GetCondition(servingv1.RouteConditionIngressReady); !c.IsTrue() {
		t.Errorf("route IngressReady = %+v", c)
	}
	pair, err := resources.MakeK8sService(ctx, route, "", got, false)
	if err != nil {
		t.Fatal(err)
	}
	if pair.Service.Spec.Type != corev1.ServiceTypeExternalName || pair.Service.Spec.ExternalName != selfDomain {
		t.Errorf("placeholder service = %s %q, want ExternalName %s", pair.Service.Spec.Type, pair.Service.Spec.ExternalName, selfDomain)
	}

	_, front := newTestProxy(t, f.rec.opts.Services, lockedIntN(3), ing)
	hosts := map[string]bool{}
	for _, r := range ing.Spec.Rules {
		for _, h := range r.Hosts {
			hosts[h] = true
		}
	}
	for _, h := range []string{"hello.default.example.com", "hello.default", "hello.default.svc", "hello.default.svc.cluster.local",
		"blue-hello.default.example.com", "blue-hello.default.svc.cluster.local"} {
		if !hosts[h] {
			t.Errorf("upstream did not emit host %s (got %v)", h, hosts)
		}
	}

	// The tag host always reaches revision 1; the default host splits.
	for range 20 {
		code, body := get(t, front, "blue-hello.default.example.com", "/", nil)
		if code != http.StatusOK || !strings.HasPrefix(body, "one rev=hello-00001 ns=default") {
			t.Fatalf("tag host: %d %q", code, body)
		}
	}
	counts := map[string]int{}
	const n = 400
	for range n {
		code, body := get(t, front, "hello.default.svc.cluster.local", "/", nil)
		if code != http.StatusOK {
			t.Fatalf("default host: %d %q", code, body)
		}
		// Each backend must get its own revision's header.
		switch {
		case strings.HasPrefix(body, "one rev=hello-00001 "):
			counts["one"]++
		case strings.HasPrefix(body, "two rev=hello-00002 "):
			counts["two"]++
		default:
			t.Fatalf("unexpected %q", body)
		}
	}
	if share := float64(counts["one"]) / n; share < 0.22 || share > 0.38 {
		t.Errorf("30%% split got %.3f (%v)", share, counts)
	}
}
