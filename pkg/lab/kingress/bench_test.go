package kingress

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// BenchmarkProxy measures one keep-alive request through the proxy to a
// loopback backend; BenchmarkDirect is the same request without it.
func BenchmarkProxy(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer be.Close()
	t := &testing.T{}
	svc := serviceFor(t, "ns", "rev", "http", be)
	svcs, _ := lister(t, svc)
	rules, err := Translate(ingress("ns", "r", rule("", []string{"b.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev", servicePort(t, svc), 50), split("ns", "rev", servicePort(t, svc), 50)},
	})))
	if err != nil {
		b.Fatal(err)
	}
	p := NewProxy(ProxyOptions{Services: svcs, Logger: zap.NewNop().Sugar()})
	p.Publish(NewTable(rules))
	front := httptest.NewServer(p)
	defer front.Close()
	defer p.CloseIdleConnections()
	benchGet(b, front, "b.example.com")
}

func BenchmarkDirect(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer be.Close()
	benchGet(b, be, "b.example.com")
}

func benchGet(b *testing.B, s *httptest.Server, host string) {
	client := s.Client()
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest("GET", s.URL+"/", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
