package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status int
		err    error
		want   string
	}{
		{200, nil, OK},
		{204, nil, OK},
		{503, nil, Status5xx},
		{502, nil, Status5xx},
		{404, nil, Status4xx},
		{0, &url.Error{Op: "Get", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, Refused},
		{0, &url.Error{Op: "Get", Err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, Reset},
		{0, fmt.Errorf("reading body: %w", errors.New("x")), Other},
		{0, &url.Error{Op: "Get", Err: context.DeadlineExceeded}, Timeout},
	} {
		if got := Classify(tc.status, tc.err); got != tc.want {
			t.Errorf("Classify(%d, %v) = %s, want %s", tc.status, tc.err, got, tc.want)
		}
	}
}

// The generator sends to its targets in turn with the Host header, and records every request,
// the failed ones with their class.
func TestGeneratorRecordsEveryRequest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "bad.example" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	g := Generator{Stream: "steady", Ingress: srv.Listener.Addr().String(), Interval: 5 * time.Millisecond, Timeout: 5 * time.Second,
		Targets: []Target{{Name: "good", Host: "good.example", Path: "/"}, {Name: "bad", Host: "bad.example", Path: "/"}}}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []Outcome
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx, func(o Outcome) { mu.Lock(); got = append(got, o); mu.Unlock() })
	}()
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 10 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	for _, o := range got {
		want := OK
		if o.Target == "bad" {
			want = Status5xx
		}
		wantHop := ""
		if o.Target == "bad" {
			wantHop = HopIngress // an empty 503
		}
		if o.Class != want || o.Stream != "steady" || o.Hop != wantHop {
			t.Errorf("%+v: class %s, want %s", o, o.Class, want)
		}
	}
}

func TestHop(t *testing.T) {
	retry := http.Header{"Retry-After": {"5"}}
	for _, tc := range []struct {
		name   string
		status int
		err    error
		body   string
		h      http.Header
		want   string
	}{
		{"success", 200, nil, "hello", nil, ""},
		{"transport error at the ingress", 0, syscall.ECONNREFUSED, "", nil, HopIngress},
		{"no answer in time", 0, &url.Error{Op: "Get", Err: context.DeadlineExceeded}, "", nil, HopUnknown},
		{"activator dialled a pod", 502, nil, "dial tcp 10.88.0.23:8012: connect: connection refused\n", nil, HopActivator},
		{"queue-proxy dialled the app", 502, nil, "dial tcp 127.0.0.1:8080: connect: connection refused", nil, HopQueueProxy},
		{"activator cannot start the revision", 503, nil, "revision chaos/never-00001 cannot start: ...", retry, HopActivator},
		{"activator sheds load", 503, nil, "overloaded", retry, HopActivator},
		{"ingress proxy error", 502, nil, "", nil, HopIngress},
		{"ingress without a route", 404, nil, `no route for host "x"`, nil, HopIngress},
		{"nothing tells", 500, nil, "boom", nil, HopUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			if h == nil {
				h = http.Header{}
			}
			if got := Hop(tc.status, tc.err, tc.body, h); got != tc.want {
				t.Errorf("Hop = %q, want %q", got, tc.want)
			}
		})
	}
}
