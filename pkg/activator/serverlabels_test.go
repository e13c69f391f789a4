package activator

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"
)

func TestServerLabels(t *testing.T) {
	for _, tc := range []struct {
		host               string
		tls                bool
		scheme, addr, port string
	}{
		{host: "hello.default.example.com", scheme: "http", addr: "hello.default.example.com"},
		{host: "hello.default.svc.cluster.local:80", scheme: "http", addr: "hello.default.svc.cluster.local"},
		{host: "10.88.1.5:8012", scheme: "http", addr: "10.88.1.5", port: "8012"},
		{host: "hello.example.com:443", tls: true, scheme: "https", addr: "hello.example.com"},
		{host: "[::1]:8080", scheme: "http", addr: "::1", port: "8080"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tc.host
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		s, a, p := serverLabels(r)
		if s != tc.scheme || a != tc.addr || p != tc.port {
			t.Errorf("%s: %s %s %s, want %s %s %s", tc.host, s, a, p, tc.scheme, tc.addr, tc.port)
		}
	}
}
