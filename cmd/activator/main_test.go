package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestLoadEnv(t *testing.T) {
	base := map[string]string{"POD_NAME": "act-0", "POD_IP": "10.0.0.5"}
	tests := []struct {
		name    string
		extra   map[string]string
		drop    string
		check   func(*env) bool
		wantErr string
	}{
		{name: "defaults", check: func(e *env) bool {
			return e.SystemNamespace == "knative-serving" && e.MaxIdleProxyConns == 1000 && e.MaxIdleProxyConnsPerHost == 100 &&
				e.ProbeTimeout == 300*time.Millisecond && e.ProbeFrequency == 200*time.Millisecond &&
				e.DrainTimeout == 45*time.Second && e.ConfigLoggingName == "config-logging" &&
				e.ConfigObservabilityName == "config-observability" && e.QueueDepth == 0 &&
				e.ProfilingPort == 8008 && e.MetricsAddr == ":9090"
		}},
		{name: "overrides", extra: map[string]string{"SYSTEM_NAMESPACE": "ks", "MAX_IDLE_PROXY_CONNS": "5",
			"MAX_IDLE_PROXY_CONNS_PER_HOST": "2", "PROBE_TIMEOUT": "1s", "PROBE_FREQUENCY": "50ms",
			"ACTIVATOR_QUEUE_DEPTH": "77", "ACTIVATOR_TOTAL_QUEUE_DEPTH": "300", "DRAIN_TIMEOUT": "3s", "CLUSTER_DOMAIN": "example.org",
			"PROFILING_PORT": "18008", "METRICS_PROMETHEUS_PORT": "19090", "METRICS_PROMETHEUS_HOST": "127.0.0.1"},
			check: func(e *env) bool {
				return e.SystemNamespace == "ks" && e.MaxIdleProxyConns == 5 && e.MaxIdleProxyConnsPerHost == 2 &&
					e.ProbeTimeout == time.Second && e.ProbeFrequency == 50*time.Millisecond && e.QueueDepth == 77 && e.TotalQueueDepth == 300 &&
					e.DrainTimeout == 3*time.Second && e.ClusterDomain == "example.org" &&
					e.ProfilingPort == 18008 && e.MetricsAddr == "127.0.0.1:19090"
			}},
		{name: "no pod name", drop: "POD_NAME", wantErr: "POD_NAME"},
		{name: "no pod ip", drop: "POD_IP", wantErr: "POD_IP"},
		{name: "bad conns", extra: map[string]string{"MAX_IDLE_PROXY_CONNS": "many"}, wantErr: "MAX_IDLE_PROXY_CONNS"},
		{name: "bad probe timeout", extra: map[string]string{"PROBE_TIMEOUT": "300"}, wantErr: "PROBE_TIMEOUT"},
		{name: "bad drain", extra: map[string]string{"DRAIN_TIMEOUT": "soon"}, wantErr: "DRAIN_TIMEOUT"},
		{name: "bad metrics port", extra: map[string]string{"METRICS_PROMETHEUS_PORT": "99999"}, wantErr: "METRICS_PROMETHEUS_PORT"},
		{name: "bad depth", extra: map[string]string{"ACTIVATOR_QUEUE_DEPTH": "-1"}, wantErr: "ACTIVATOR_QUEUE_DEPTH"},
		{name: "bad total depth", extra: map[string]string{"ACTIVATOR_TOTAL_QUEUE_DEPTH": "x"}, wantErr: "ACTIVATOR_TOTAL_QUEUE_DEPTH"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			for k, v := range tc.extra {
				m[k] = v
			}
			delete(m, tc.drop)
			e, err := loadEnv(func(k string) string { return m[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(e) {
				t.Fatalf("env = %+v, err %v", e, err)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	f, err := parseFlags([]string{"--kubeconfig", "kc", "--server", "https://api:6443", "--kube-api-qps", "50"},
		func(k string) string { return map[string]string{"KUBE_API_BURST": "70"}[k] })
	if err != nil || f.kubeconfig != "kc" || f.server != "https://api:6443" || f.qps != 50 || f.burst != 70 {
		t.Fatalf("%+v %v", f, err)
	}
	if _, err := parseFlags([]string{"--bogus"}, func(string) string { return "" }); err == nil {
		t.Fatal("unknown flag accepted")
	}
}

// TestDrain follows SIGTERM: readiness fails at once, the server keeps
// serving through the drain period, then shuts down after in-flight
// requests finish.
func TestDrain(t *testing.T) {
	ds := &drainState{}
	release := make(chan struct{})
	inFlight := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(inFlight)
			<-release
		}
		if err := ds.Health(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + lis.Addr().String()
	srv := dataServer(lis.Addr().String(), h)
	clk := clocktesting.NewFakeClock(time.Now())
	sigCtx, sigterm := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(sigCtx, []namedServer{{name: "http1", srv: srv, lis: lis}}, ds, 45*time.Second, terminationGrace, clk, zaptest.NewLogger(t).Sugar())
	}()

	get := func(path string) (int, string) {
		resp, err := http.Get(url + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/"); code != 200 {
		t.Fatalf("before SIGTERM: %d", code)
	}
	slow := make(chan int, 1)
	go func() { c, _ := get("/slow"); slow <- c }()
	<-inFlight

	sigterm()
	for !clk.HasWaiters() { // the drain timer
		time.Sleep(time.Millisecond)
	}
	if code, body := get("/"); code != 500 || !strings.Contains(body, "SIGTERM") {
		t.Fatalf("while draining: %d %q, want 500 (still served)", code, body)
	}
	clk.Step(45 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("serve returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if c := <-slow; c != 500 {
		// It finished after SIGTERM, so its own health check reads draining.
		t.Fatalf("in-flight request: %d", c)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if code, _ := get("/"); code != 0 {
		t.Fatal("still serving after shutdown")
	}
}

// TestDrainAfterLongUptime is an activator up for longer than the
// termination grace when SIGTERM comes (every production activator): it
// still serves for the whole drain period and waits for in-flight requests,
// which are cut only once the grace, counted from the signal, is over.
func TestDrainAfterLongUptime(t *testing.T) {
	const drain, grace = 45 * time.Second, 10 * time.Minute
	tests := []struct {
		name string
		// finishAfter is when the in-flight request finishes, from SIGTERM; 0 means never.
		finishAfter time.Duration
		wantCode    int
	}{
		{name: "finishes after the drain", finishAfter: drain + 2*time.Minute, wantCode: http.StatusOK},
		{name: "finishes just before the grace", finishAfter: grace - time.Second, wantCode: http.StatusOK},
		{name: "stuck past the grace", wantCode: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := &drainState{}
			release := make(chan struct{})
			inFlight := make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					close(inFlight)
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
					io.WriteString(w, "done")
					return
				}
				if err := ds.Health(); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				io.WriteString(w, "ok")
			})
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			url := "http://" + lis.Addr().String()
			srv := dataServer(lis.Addr().String(), h)
			clk := clocktesting.NewFakeClock(time.Now())
			sigCtx, sigterm := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- serve(sigCtx, []namedServer{{name: "http1", srv: srv, lis: lis}}, ds, drain, grace, clk, zaptest.NewLogger(t).Sugar())
			}()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			get := func(path string) int {
				resp, err := client.Get(url + path)
				if err != nil {
					return 0
				}
				defer resp.Body.Close()
				io.Copy(io.Discard, resp.Body)
				return resp.StatusCode
			}
			if code := get("/"); code != http.StatusOK {
				t.Fatalf("before SIGTERM: %d", code)
			}
			clk.Step(11 * time.Minute) // up for longer than the grace
			slow := make(chan int, 1)
			go func() { slow <- get("/slow") }()
			<-inFlight

			sigterm()
			for get("/") != http.StatusInternalServerError { // draining: both timers are set
				select {
				case err := <-done:
					t.Fatalf("serve returned (%v) at SIGTERM without draining", err)
				case <-time.After(time.Millisecond):
				}
			}
			stillServing := func(when string) {
				t.Helper()
				select {
				case err := <-done:
					t.Fatalf("%s: serve returned (%v) with a request in flight", when, err)
				case c := <-slow:
					t.Fatalf("%s: in-flight request ended early with %d", when, c)
				case <-time.After(50 * time.Millisecond):
				}
			}
			stillServing("at SIGTERM")
			clk.Step(drain - time.Second)
			if code := get("/"); code != http.StatusInternalServerError {
				t.Fatalf("a second before the drain ends: %d, want 500 (still served, not ready)", code)
			}
			clk.Step(time.Second)
			stillServing("after the drain")
			if tc.finishAfter > 0 {
				clk.Step(tc.finishAfter - drain)
				stillServing("before the request finished")
				close(release)
				if c := <-slow; c != tc.wantCode {
					t.Fatalf("in-flight request: %d, want %d", c, tc.wantCode)
				}
			} else {
				clk.Step(grace - drain - time.Second)
				stillServing("a second before the grace ends")
				clk.Step(time.Second)
				if c := <-slow; c != tc.wantCode {
					t.Fatalf("stuck request: %d, want %d (cut at the grace)", c, tc.wantCode)
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("serve: %v", err)
			}
		})
	}
}
