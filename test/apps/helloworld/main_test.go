package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandler(t *testing.T) {
	for _, tc := range []struct{ target, want string }{
		{"World", "Hello World!\n"},
		{"Thaw", "Hello Thaw!\n"},
	} {
		rec := httptest.NewRecorder()
		newHandler(tc.target).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/anything", nil))
		if rec.Code != http.StatusOK || rec.Body.String() != tc.want {
			t.Errorf("target %q: got %d %q, want 200 %q", tc.target, rec.Code, rec.Body.String(), tc.want)
		}
	}
}

func TestEnvOr(t *testing.T) {
	t.Setenv("THAW_TEST_TARGET", "")
	if got := envOr("THAW_TEST_TARGET", "World"); got != "World" {
		t.Errorf("unset: got %q", got)
	}
	t.Setenv("THAW_TEST_TARGET", "Go")
	if got := envOr("THAW_TEST_TARGET", "World"); got != "Go" {
		t.Errorf("set: got %q", got)
	}
}

// TestServeDrains checks that a request in flight when the context ends still gets its answer.
func TestServeDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	started := make(chan struct{})
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, srv, ln) }()

	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-started
	cancel()
	close(release)
	if g := <-got; g != "done" {
		t.Errorf("in-flight request got %q, want done", g)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}
