package kingress

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

const selfDomain = "thaw-ingress.thaw-system.svc.cluster.local"

// echoBackend answers with its name and the headers the proxy must set.
func echoBackend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s rev=%s ns=%s x-path=%s path=%s host=%s proto=%d",
			name, r.Header.Get("Knative-Serving-Revision"), r.Header.Get("Knative-Serving-Namespace"),
			r.Header.Get("X-Path"), r.URL.Path, r.Host, r.ProtoMajor)
	}))
	t.Cleanup(s.Close)
	return s
}

// serviceFor is a Service whose ClusterIP:port is the loopback backend, the
// way kube-proxy would make a real ClusterIP reach pods.
func serviceFor(t *testing.T, ns, name, portName string, backend *httptest.Server) *corev1.Service {
	t.Helper()
	_, port, err := net.SplitHostPort(backend.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: "127.0.0.1",
			Ports:     []corev1.ServicePort{{Name: portName, Port: int32(p), TargetPort: intstr.FromInt(p)}},
		},
	}
}

func servicePort(t *testing.T, s *corev1.Service) int {
	t.Helper()
	return int(s.Spec.Ports[0].Port)
}

func lister(t *testing.T, svcs ...*corev1.Service) (corelisters.ServiceLister, cache.Indexer) {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, s := range svcs {
		if err := idx.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewServiceLister(idx), idx
}

func newTestProxy(t *testing.T, svcs corelisters.ServiceLister, intn func(int) int, ings ...*v1alpha1.Ingress) (*Proxy, *httptest.Server) {
	t.Helper()
	return newTestProxyWith(t, ProxyOptions{Services: svcs, IntN: intn}, ings...)
}

// newTestProxyWith serves ings through a proxy built from opts (self domain
// and logger filled in).
func newTestProxyWith(t *testing.T, opts ProxyOptions, ings ...*v1alpha1.Ingress) (*Proxy, *httptest.Server) {
	t.Helper()
	opts.SelfDomains = []string{selfDomain}
	opts.Logger = zaptest.NewLogger(t).Sugar()
	p := NewProxy(opts)
	var all []Rule
	for _, ing := range ings {
		rules, err := Translate(ing)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rules...)
	}
	p.Publish(NewTable(all))
	front := httptest.NewServer(p)
	t.Cleanup(func() {
		front.Close()
		p.CloseIdleConnections()
	})
	return p, front
}

func get(t *testing.T, front *httptest.Server, host, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", front.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProxyRouting(t *testing.T) {
	ext, local, api := echoBackend(t, "ext"), echoBackend(t, "local"), echoBackend(t, "api")
	svcExt := serviceFor(t, "ns", "rev-ext", "http", ext)
	svcLocal := serviceFor(t, "ns", "rev-local", "http", local)
	svcAPI := serviceFor(t, "other", "rev-api", "http", api)
	svcs, _ := lister(t, svcExt, svcLocal, svcAPI,
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pending"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "elsewhere"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.org"}})

	ing := ingress("ns", "route",
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"hello.ns.example.com"},
			v1alpha1.HTTPIngressPath{Path: "/api", Splits: []v1alpha1.IngressBackendSplit{split("other", "rev-api", servicePort(t, svcAPI), 100)}},
			v1alpha1.HTTPIngressPath{
				AppendHeaders: map[string]string{"X-Path": "p"},
				Splits:        []v1alpha1.IngressBackendSplit{split("ns", "rev-ext", servicePort(t, svcExt), 100)},
			}),
		rule(v1alpha1.IngressVisibilityClusterLocal,
			[]string{"hello.ns", "hello.ns.svc", "hello.ns.svc.cluster.local"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev-local", servicePort(t, svcLocal), 100)}}),
		rule("", []string{"pending.example.com"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("ns", "pending", 80, 100)}}),
		rule("", []string{"missing.example.com"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("ns", "nope", 80, 100)}}),
		rule("", []string{"wrongport.example.com"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev-ext", 1, 100)}}),
		rule("", []string{"external.example.com"},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("ns", "elsewhere", 80, 100)}}),
	)
	_, front := newTestProxy(t, svcs, nil, ing)

	cases := []struct {
		name, host, path string
		hdr              map[string]string
		wantCode         int
		wantBody         []string
	}{
		{name: "external host", host: "hello.ns.example.com", path: "/",
			wantCode: 200, wantBody: []string{"ext ", "rev=rev-ext", "ns=ns", "x-path=p", "host=hello.ns.example.com"}},
		{name: "host with port and case", host: "Hello.NS.example.com:80", path: "/x",
			wantCode: 200, wantBody: []string{"ext ", "path=/x"}},
		{name: "path prefix", host: "hello.ns.example.com", path: "/api/v1",
			wantCode: 200, wantBody: []string{"api ", "rev=rev-api", "ns=other", "x-path= "}},
		{name: "client cannot spoof revision header", host: "hello.ns.example.com", path: "/",
			hdr: map[string]string{"Knative-Serving-Revision": "evil"}, wantCode: 200, wantBody: []string{"rev=rev-ext "}},
		{name: "cluster-local short", host: "hello.ns", path: "/", wantCode: 200, wantBody: []string{"local ", "rev=rev-local"}},
		{name: "cluster-local svc", host: "hello.ns.svc", path: "/", wantCode: 200, wantBody: []string{"local "}},
		{name: "cluster-local fqdn", host: "hello.ns.svc.cluster.local:80", path: "/", wantCode: 200, wantBody: []string{"local "}},
		{name: "unknown host", host: "nobody.example.com", path: "/", wantCode: 404},
		{name: "service without ClusterIP", host: "pending.example.com", path: "/", wantCode: 503, wantBody: []string{"no ClusterIP"}},
		{name: "unknown service", host: "missing.example.com", path: "/", wantCode: 503, wantBody: []string{"not found"}},
		{name: "unknown port", host: "wrongport.example.com", path: "/", wantCode: 503, wantBody: []string{"no port"}},
		{name: "foreign ExternalName", host: "external.example.com", path: "/", wantCode: 503, wantBody: []string{"ExternalName"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := get(t, front, c.host, c.path, c.hdr)
			if code != c.wantCode {
				t.Fatalf("status = %d, want %d (body %q)", code, c.wantCode, body)
			}
			for _, w := range c.wantBody {
				if !strings.Contains(body, w) {
					t.Errorf("body %q lacks %q", body, w)
				}
			}
		})
	}
}

func TestProxySplitsAndPublish(t *testing.T) {
	a, b := echoBackend(t, "A"), echoBackend(t, "B")
	sa, sb := serviceFor(t, "ns", "rev-a", "http", a), serviceFor(t, "ns", "rev-b", "http", b)
	svcs, _ := lister(t, sa, sb)
	ing := ingress("ns", "r", rule("", []string{"split.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev-a", servicePort(t, sa), 20), split("ns", "rev-b", servicePort(t, sb), 80)},
	}))
	// The draw decides the split: [0,20) is A, [20,100) is B.
	var draw int
	p, front := newTestProxy(t, svcs, func(n int) int {
		if n != 100 {
			t.Errorf("IntN(%d), want 100", n)
		}
		return draw
	}, ing)
	for _, c := range []struct {
		draw int
		want string
	}{{0, "A rev=rev-a"}, {19, "A rev=rev-a"}, {20, "B rev=rev-b"}, {99, "B rev=rev-b"}} {
		draw = c.draw
		if code, body := get(t, front, "split.example.com", "/", nil); code != 200 || !strings.HasPrefix(body, c.want) {
			t.Errorf("draw %d: %d %q, want prefix %q", c.draw, code, body, c.want)
		}
	}

	// Publishing an empty table removes the host at once.
	p.Publish(NewTable(nil))
	if code, _ := get(t, front, "split.example.com", "/", nil); code != http.StatusNotFound {
		t.Errorf("after removing routes: %d, want 404", code)
	}
}

func TestProxySplitShareOverHTTP(t *testing.T) {
	a, b := echoBackend(t, "A"), echoBackend(t, "B")
	sa, sb := serviceFor(t, "ns", "rev-a", "http", a), serviceFor(t, "ns", "rev-b", "http", b)
	svcs, _ := lister(t, sa, sb)
	ing := ingress("ns", "r", rule("", []string{"split.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev-a", servicePort(t, sa), 30), split("ns", "rev-b", servicePort(t, sb), 70)},
	}))
	_, front := newTestProxy(t, svcs, lockedIntN(7), ing)
	const n = 1000
	countA := 0
	for range n {
		code, body := get(t, front, "split.example.com", "/", nil)
		if code != 200 {
			t.Fatalf("status %d %q", code, body)
		}
		if strings.HasPrefix(body, "A ") {
			countA++
		}
	}
	// Loose bound: the exact statistics are covered by TestPickFollowsPercentages.
	if share := float64(countA) / n; share < 0.25 || share > 0.35 {
		t.Errorf("A got %.3f of requests, want ~0.30", share)
	}
}

func TestProxyH2C(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		fmt.Fprintf(w, "proto=%d rev=%s", r.ProtoMajor, r.Header.Get("Knative-Serving-Revision"))
		w.Header().Set("Grpc-Status", "0")
	}))
	be.Config.Protocols = new(http.Protocols)
	be.Config.Protocols.SetUnencryptedHTTP2(true)
	be.Start()
	t.Cleanup(be.Close)

	cases := []struct {
		name     string
		portName string
		appProto *string
	}{
		{"port named http2", "http2", nil},
		{"appProtocol kubernetes.io/h2c", "web", ptrTo("kubernetes.io/h2c")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svc := serviceFor(t, "ns", "grpc", c.portName, be)
			svc.Spec.Ports[0].AppProtocol = c.appProto
			svcs, _ := lister(t, svc)
			ing := ingress("ns", "r", rule("", []string{"grpc.example.com"}, v1alpha1.HTTPIngressPath{
				Splits: []v1alpha1.IngressBackendSplit{split("ns", "grpc", servicePort(t, svc), 100)},
			}))
			p, _ := newTestProxy(t, svcs, nil, ing)
			// gRPC clients speak prior-knowledge h2c to the ingress too.
			front := httptest.NewUnstartedServer(p)
			front.Config.Protocols = new(http.Protocols)
			front.Config.Protocols.SetHTTP1(true)
			front.Config.Protocols.SetUnencryptedHTTP2(true)
			front.Start()
			t.Cleanup(front.Close)
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			t.Cleanup(tr.CloseIdleConnections)
			req, _ := http.NewRequest("POST", front.URL+"/pkg.Svc/Ping", strings.NewReader("x"))
			req.Host = "grpc.example.com"
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "proto=2 rev=grpc" {
				t.Fatalf("%d %q, want 200 proto=2 rev=grpc", resp.StatusCode, body)
			}
			if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
				t.Errorf("trailer Grpc-Status = %q, want 0", got)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestProxyWebsocketPassthrough(t *testing.T) {
	up := websocket.Upgrader{}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, http.Header{"X-Rev": {r.Header.Get("Knative-Serving-Revision")}})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(be.Close)
	svc := serviceFor(t, "ns", "ws", "http", be)
	svcs, _ := lister(t, svc)
	ing := ingress("ns", "r", rule("", []string{"ws.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "ws", servicePort(t, svc), 100)},
	}))
	_, front := newTestProxy(t, svcs, nil, ing)

	url := "ws" + strings.TrimPrefix(front.URL, "http") + "/socket"
	c, resp, err := websocket.DefaultDialer.Dial(url, http.Header{"Host": {"ws.example.com"}})
	if err != nil {
		t.Fatalf("dial through proxy: %v", err)
	}
	defer c.Close()
	if got := resp.Header.Get("X-Rev"); got != "ws" {
		t.Errorf("backend saw revision %q, want ws", got)
	}
	for _, m := range []string{"one", "two"} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo:"+m {
			t.Errorf("got %q, want echo:%s", got, m)
		}
	}
}

// A DomainMapping's Ingress sends traffic to the Route's placeholder
// Service, an ExternalName naming our own load balancer: the proxy must
// re-route with the rewritten host instead of dialling.
func TestProxyRewriteHostThroughSelf(t *testing.T) {
	be := echoBackend(t, "route")
	rev := serviceFor(t, "ns", "rev", "http", be)
	placeholder := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "hello"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: selfDomain},
	}
	loop := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "loop"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: selfDomain + "."},
	}
	svcs, _ := lister(t, rev, placeholder, loop)
	route := ingress("ns", "hello", rule("", []string{"hello.ns.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev", servicePort(t, rev), 100)},
	}))
	dm := ingress("ns", "mapping.com", rule("", []string{"mapping.com"}, v1alpha1.HTTPIngressPath{
		RewriteHost: "hello.ns.example.com",
		Splits: []v1alpha1.IngressBackendSplit{{
			IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: "ns", ServiceName: "hello", ServicePort: intstr.FromInt(80)},
			Percent:        100,
			AppendHeaders:  map[string]string{"K-Original-Host": "mapping.com"},
		}},
	}))
	looping := ingress("ns", "loop", rule("", []string{"loop.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "loop", 80, 100)},
	}))
	_, front := newTestProxy(t, svcs, nil, route, dm, looping)

	code, body := get(t, front, "mapping.com", "/", nil)
	if code != 200 || !strings.Contains(body, "route rev=rev") || !strings.Contains(body, "host=hello.ns.example.com") {
		t.Errorf("mapped request: %d %q", code, body)
	}
	if code, body := get(t, front, "loop.example.com", "/", nil); code != http.StatusLoopDetected {
		t.Errorf("self loop: %d %q, want 508", code, body)
	}
}

// Tables are swapped while requests are in flight: every request sees
// either the old or the new table, never a torn one.
func TestProxyPublishWhileServing(t *testing.T) {
	be := echoBackend(t, "be")
	svc := serviceFor(t, "ns", "rev", "http", be)
	svcs, _ := lister(t, svc)
	rules, err := Translate(ingress("ns", "r", rule("", []string{"swap.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev", servicePort(t, svc), 100)},
	})))
	if err != nil {
		t.Fatal(err)
	}
	with, without := NewTable(rules), NewTable(nil)
	p, front := newTestProxy(t, svcs, nil)
	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				p.Publish(with)
			} else {
				p.Publish(without)
			}
		}
	}()
	seen := map[int]int{}
	for range 200 {
		code, body := get(t, front, "swap.example.com", "/", nil)
		seen[code]++
		if code == 200 && !strings.HasPrefix(body, "be rev=rev ") {
			t.Fatalf("200 with body %q", body)
		}
		if code != 200 && code != 404 {
			t.Fatalf("status %d %q", code, body)
		}
	}
	close(stop)
	<-swapped
	if seen[200] == 0 {
		t.Errorf("never routed while swapping: %v", seen)
	}
}
