package kingress

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// split builds an IngressBackendSplit with Knative's revision headers.
func split(ns, name string, port, percent int) v1alpha1.IngressBackendSplit {
	return v1alpha1.IngressBackendSplit{
		IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: name, ServicePort: intstr.FromInt(port)},
		Percent:        percent,
		AppendHeaders: map[string]string{
			"Knative-Serving-Revision":  name,
			"Knative-Serving-Namespace": ns,
		},
	}
}

func ingress(ns, name string, rules ...v1alpha1.IngressRule) *v1alpha1.Ingress {
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, Generation: 1,
			Annotations: map[string]string{networking.IngressClassAnnotationKey: IngressClass},
		},
		Spec: v1alpha1.IngressSpec{Rules: rules},
	}
}

func rule(vis v1alpha1.IngressVisibility, hosts []string, paths ...v1alpha1.HTTPIngressPath) v1alpha1.IngressRule {
	return v1alpha1.IngressRule{Hosts: hosts, Visibility: vis, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: paths}}
}

func TestTranslateRejectsBadSpecs(t *testing.T) {
	good := v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev", 80, 100)}}
	cases := []struct {
		name string
		ing  *v1alpha1.Ingress
	}{
		{"no rules", ingress("ns", "a")},
		{"no hosts", ingress("ns", "a", rule("", nil, good))},
		{"empty host", ingress("ns", "a", rule("", []string{""}, good))},
		{"nil http", ingress("ns", "a", v1alpha1.IngressRule{Hosts: []string{"h"}})},
		{"no paths", ingress("ns", "a", rule("", []string{"h"}))},
		{"no splits", ingress("ns", "a", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{}))},
		{"relative path", ingress("ns", "a", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{
			Path: "foo", Splits: good.Splits}))},
		{"all zero percents", ingress("ns", "a", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "a", 80, 0), split("ns", "b", 80, 0)}}))},
		{"negative percent", ingress("ns", "a", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "a", 80, -10), split("ns", "b", 80, 110)}}))},
		{"no service name", ingress("ns", "a", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "", 80, 100)}}))},
		{"no service namespace", ingress("ns", "a", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("", "x", 80, 100)}}))},
		{"port zero", ingress("ns", "a", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "x", 0, 100)}}))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rules, err := Translate(c.ing)
			if !errors.Is(err, ErrInvalidIngress) {
				t.Fatalf("Translate() = %v, %v; want ErrInvalidIngress", rules, err)
			}
		})
	}
}

func TestTranslate(t *testing.T) {
	ing := ingress("ns", "route",
		rule(v1alpha1.IngressVisibilityClusterLocal,
			[]string{"svc.ns", "svc.ns.svc", "Svc.NS.svc.cluster.local."},
			v1alpha1.HTTPIngressPath{
				Headers: map[string]v1alpha1.HeaderMatch{"knative-serving-tag": {Exact: "blue"}},
				Splits:  []v1alpha1.IngressBackendSplit{split("ns", "blue", 80, 100)},
			},
			v1alpha1.HTTPIngressPath{
				AppendHeaders: map[string]string{"x-path": "1"},
				Splits:        []v1alpha1.IngressBackendSplit{split("ns", "a", 80, 30), split("ns", "b", 81, 70), split("ns", "c", 80, 0)},
			}),
		rule("", []string{"svc.ns.example.com"}, v1alpha1.HTTPIngressPath{
			// A lone split with no percent is defaulted to 100 by the webhook.
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "a", 80, 0)},
		}),
	)
	rules, err := Translate(ing)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 {
		t.Fatalf("got %d rules, want 2", len(rules))
	}
	r0 := rules[0]
	if want := []string{"svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"}; !equalStrings(r0.Hosts, want) {
		t.Errorf("hosts = %v, want %v (lower-cased, trailing dot dropped)", r0.Hosts, want)
	}
	if r0.Visibility != v1alpha1.IngressVisibilityClusterLocal || rules[1].Visibility != v1alpha1.IngressVisibilityExternalIP {
		t.Errorf("visibility = %q, %q", r0.Visibility, rules[1].Visibility)
	}
	if got := r0.Paths[0].Headers["Knative-Serving-Tag"]; got != "blue" {
		t.Errorf("header match not canonicalized: %v", r0.Paths[0].Headers)
	}
	p := r0.Paths[1]
	if len(p.Splits) != 2 || p.total != 100 {
		t.Errorf("zero-weight split kept or total wrong: %+v total %d", p.Splits, p.total)
	}
	if p.AppendHeaders["X-Path"] != "1" || p.Splits[1].AppendHeaders["Knative-Serving-Revision"] != "b" {
		t.Errorf("headers: path %v split %v", p.AppendHeaders, p.Splits[1].AppendHeaders)
	}
	if s := rules[1].Paths[0].Splits; len(s) != 1 || s[0].Weight != 100 {
		t.Errorf("lone split = %+v, want weight 100", s)
	}
}

func TestTableMatch(t *testing.T) {
	ing := ingress("ns", "r",
		rule("", []string{"a.example.com"},
			v1alpha1.HTTPIngressPath{Path: "/api", Splits: []v1alpha1.IngressBackendSplit{split("ns", "api", 80, 100)}},
			v1alpha1.HTTPIngressPath{
				Headers: map[string]v1alpha1.HeaderMatch{"K-Tag": {Exact: "x"}},
				Splits:  []v1alpha1.IngressBackendSplit{split("ns", "tagged", 80, 100)},
			},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("ns", "root", 80, 100)}}),
	)
	rules, err := Translate(ing)
	if err != nil {
		t.Fatal(err)
	}
	tbl := NewTable(rules)
	cases := []struct {
		host, path string
		hdr        map[string]string
		want       string // service name, "" for no match
	}{
		{"a.example.com", "/", nil, "root"},
		{"A.Example.COM:8080", "/api/v1", nil, "api"},
		{"a.example.com", "/apix", nil, "api"}, // literal prefix, as the spec says
		{"a.example.com", "/other", map[string]string{"k-tag": "x"}, "tagged"},
		{"a.example.com", "/other", map[string]string{"k-tag": "y"}, "root"},
		{"b.example.com", "/", nil, ""},
	}
	for _, c := range cases {
		req := httptest.NewRequest("GET", "http://"+c.host+c.path, nil)
		for k, v := range c.hdr {
			req.Header.Set(k, v)
		}
		p := tbl.Match(normalizeHost(req.Host), req)
		got := ""
		if p != nil {
			got = p.Splits[0].Name
		}
		if got != c.want {
			t.Errorf("Match(%s%s %v) = %q, want %q", c.host, c.path, c.hdr, got, c.want)
		}
	}
}

// lockedIntN makes a seeded source safe for the proxy's concurrent use.
func lockedIntN(seed uint64) func(int) int {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		return r.IntN(n)
	}
}

func TestPickFollowsPercentages(t *testing.T) {
	cases := []struct {
		name     string
		percents []int
	}{
		{"50/50", []int{50, 50}},
		{"10/90", []int{10, 90}},
		{"1/99", []int{1, 99}},
		{"20/30/50", []int{20, 30, 50}},
		{"relative 1/3", []int{1, 3}},
	}
	const n = 10000
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var splits []v1alpha1.IngressBackendSplit
			total := 0
			for i, pc := range c.percents {
				splits = append(splits, split("ns", string(rune('a'+i)), 80, pc))
				total += pc
			}
			rules, err := Translate(ingress("ns", "r", rule("", []string{"h"}, v1alpha1.HTTPIngressPath{Splits: splits})))
			if err != nil {
				t.Fatal(err)
			}
			p := &rules[0].Paths[0]
			intn := lockedIntN(42)
			counts := map[string]int{}
			for range n {
				counts[p.pick(intn).Name]++
			}
			for i, pc := range c.percents {
				got := float64(counts[string(rune('a'+i))]) / n
				want := float64(pc) / float64(total)
				if math.Abs(got-want) > 0.02 {
					t.Errorf("split %d: share %.4f, want %.4f ±0.02 (counts %v)", i, got, want, counts)
				}
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzTranslate feeds arbitrary Ingress specs: Translate must either reject
// them or produce rules the proxy can pick from without panicking.
func FuzzTranslate(f *testing.F) {
	f.Add([]byte(`{"rules":[{"hosts":["a"],"http":{"paths":[{"splits":[{"serviceName":"s","serviceNamespace":"n","servicePort":80,"percent":0}]}]}}]}`))
	f.Add([]byte(`{"rules":[{"hosts":["a"],"http":{"paths":[{"path":"/x","splits":[{"serviceName":"s","serviceNamespace":"n","servicePort":"http","percent":40},{"serviceName":"t","serviceNamespace":"n","servicePort":81,"percent":0}]}]}}]}`))
	f.Add([]byte(`{"rules":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ing := &v1alpha1.Ingress{}
		if json.Unmarshal(b, &ing.Spec) != nil {
			return
		}
		rules, err := Translate(ing)
		if err != nil {
			return
		}
		tbl := NewTable(rules)
		intn := lockedIntN(1)
		for _, r := range rules {
			for i := range r.Paths {
				p := &r.Paths[i]
				if p.total <= 0 || len(p.Splits) == 0 {
					t.Fatalf("accepted path with total %d and %d splits", p.total, len(p.Splits))
				}
				_ = p.pick(intn)
			}
			for _, h := range r.Hosts {
				req := httptest.NewRequest("GET", "http://x/", nil)
				_ = tbl.Match(h, req)
			}
		}
	})
}
