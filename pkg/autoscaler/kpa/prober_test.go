package kpa

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHTTPProber(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   bool
	}{
		{"activator", http.StatusOK, "activator", true},
		{"queue-proxy answers 400", http.StatusBadRequest, "unexpected probe header value", false},
		{"wrong body", http.StatusOK, "queue", false},
		{"unavailable", http.StatusServiceUnavailable, "activator", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get(probeHeader) != probeValue || r.UserAgent() != probeUserAgent || r.URL.Path != "/healthz" {
					http.Error(w, "bad probe", http.StatusTeapot)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			ok, err := NewHTTPProber(nil).Probe(context.Background(), srv.URL+"/healthz")
			if ok != tc.want || (ok && err != nil) || (!ok && err == nil) {
				t.Fatalf("Probe = %v, %v; want %v", ok, err, tc.want)
			}
		})
	}
	// Unreachable.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if ok, err := NewHTTPProber(nil).Probe(context.Background(), url); ok || err == nil {
		t.Fatalf("Probe of a closed port = %v, %v", ok, err)
	}
}
