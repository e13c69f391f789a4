package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestApp(t *testing.T) {
	srv := httptest.NewServer(&app{host: "h", revision: "rev-1"})
	t.Cleanup(srv.Close)
	cases := []struct {
		query      string
		wantStatus int
		wantBody   string
	}{
		{"", 200, "autoscale h inflight=1"},
		{"?sleep=5", 200, "autoscale h"},
		{"?status=503", 503, "autoscale h"},
		{"?status=abc", 400, "status must be"},
		{"?sleep=-1", 400, "sleep must be"},
		{"?bytes=70000", 200, strings.Repeat("x", 70000)},
	}
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			resp, err := http.Get(srv.URL + "/" + c.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, c.wantStatus)
			}
			if !strings.Contains(string(body), c.wantBody) {
				t.Fatalf("body = %.80q, want it to contain %.80q", body, c.wantBody)
			}
			if c.wantStatus == 200 && resp.Header.Get("X-Autoscale-Revision") != "rev-1" {
				t.Fatalf("missing revision header")
			}
		})
	}
}

func TestHangEndsWithClient(t *testing.T) {
	srv := httptest.NewServer(&app{host: "h"})
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/?hang=1", nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("a hanging request answered")
	}
}
