package ksvc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestReadyOf(t *testing.T) {
	mk := func(gen, obs int64, status string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"metadata": map[string]any{"generation": gen},
			"status": map[string]any{"observedGeneration": obs, "latestReadyRevisionName": "r-1",
				"conditions": []any{map[string]any{"type": "Ready", "status": status, "reason": "R", "message": "m"}}},
		}}
		return u
	}
	for _, tc := range []struct {
		name string
		u    *unstructured.Unstructured
		want bool
	}{
		{"ready", mk(2, 2, "True"), true},
		{"stale generation", mk(3, 2, "True"), false},
		{"not ready", mk(1, 1, "Unknown"), false},
		{"no status", &unstructured.Unstructured{Object: map[string]any{}}, false},
	} {
		got, _, _, err := readyOf(tc.u)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %v, %v", tc.name, got, err)
		}
	}
}

func TestClientSetsHost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Host))
	}))
	defer srv.Close()
	c := NewClient(strings.TrimPrefix(srv.URL, "http://"), 5*time.Second)
	resp, err := c.Get(context.Background(), Host("hello", "default", "example.com"), "/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.Body != "hello.default.example.com" {
		t.Fatalf("got %d %q", resp.Status, resp.Body)
	}
}
