package activator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/pkg/wire"
)

var testRev = types.NamespacedName{Namespace: "ns", Name: "rev"}

type fakeRevisions map[types.NamespacedName]*revisions.Info

func (f fakeRevisions) Get(ns, name string) (*revisions.Info, error) {
	if i, ok := f[types.NamespacedName{Namespace: ns, Name: name}]; ok {
		return i, nil
	}
	return nil, fmt.Errorf("%w: %s/%s", revisions.ErrNotFound, ns, name)
}

// fakeThrottler hands out dests in order, retrying on ErrRetryable like the
// real one; block makes it wait for the context (a queued request).
type fakeThrottler struct {
	mu       sync.Mutex
	dests    []string
	err      error
	block    bool
	started  chan struct{}
	attempts []string
}

func (f *fakeThrottler) UpsertRevision(types.NamespacedName, throttler.RevisionConfig) {}

func (f *fakeThrottler) Try(ctx context.Context, _ types.NamespacedName, fn func(string) error) error {
	if f.started != nil {
		close(f.started)
	}
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	var err error
	for _, d := range f.dests {
		f.mu.Lock()
		f.attempts = append(f.attempts, d)
		f.mu.Unlock()
		if err = fn(d); !errors.Is(err, throttler.ErrRetryable) {
			return err
		}
	}
	return err
}

// funcProxy is a Proxier made of a function.
type funcProxy func(w http.ResponseWriter, r *http.Request, dest string) error

func (f funcProxy) Serve(w http.ResponseWriter, r *http.Request, t proxy.Target) error {
	return f(w, r, t.Dest)
}

func testInfo() *revisions.Info {
	return &revisions.Info{ID: testRev, Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second,
		Service: "svc", Configuration: "cfg"}
}

// testConfig is everything the handler chain takes, for tests that set a few fields of any layer.
// Its Clock runs both the activation's timeouts and the instrumentation's durations.
type testConfig struct {
	Config
	InstrumentConfig
	Revisions     RevisionGetter
	ClusterDomain string
	Health        func() error
	Clock         clock.Clock
}

// newChain is the chain as cmd/activator builds it: probes, revision lookup, instrumentation, activation.
func newChain(tc testConfig) http.Handler {
	if tc.Clock != nil {
		tc.Config.Clock, tc.InstrumentConfig.Clock = tc.Clock, tc.Clock
	}
	return Probes(tc.Health, LookupRevision(tc.Revisions, tc.ClusterDomain, tc.Logger,
		Instrument(tc.InstrumentConfig, NewHandler(tc.Config))))
}

func newTestHandler(t *testing.T, th Throttler, p Proxier, mod func(*testConfig)) http.Handler {
	t.Helper()
	cfg := testConfig{
		Config: Config{
			Throttler: th,
			Proxy:     p,
			IsNotSent: func(err error) bool { return errors.Is(err, proxy.ErrNotSent) },
			Logger:    zaptest.NewLogger(t).Sugar(),
		},
		Revisions: fakeRevisions{testRev: testInfo()},
	}
	if mod != nil {
		mod(&cfg)
	}
	return newChain(cfg)
}

func revRequest(method string) *http.Request {
	r := httptest.NewRequest(method, "http://example.com/", nil)
	r.Header.Set(proxy.RevisionHeader, testRev.Name)
	r.Header.Set(proxy.NamespaceHeader, testRev.Namespace)
	return r
}

var okProxy = funcProxy(func(w http.ResponseWriter, r *http.Request, dest string) error {
	io.WriteString(w, "proxied to "+dest)
	return nil
})

func TestProbes(t *testing.T) {
	draining := errors.New("received SIGTERM")
	tests := []struct {
		name     string
		health   error
		headers  map[string]string
		wantCode int
		wantBody string
		wantHash string
	}{
		{"kubelet UA", nil, map[string]string{"User-Agent": "kube-probe/1.36"}, 200, "", ""},
		{"kubelet header", nil, map[string]string{KubeletProbeHeader: "1"}, 200, "", ""},
		{"kubelet while draining", draining, map[string]string{"User-Agent": "kube-probe/1.36"}, 500, "received SIGTERM\n", ""},
		{"network probe", nil, map[string]string{NetworkProbeHeader: "probe", NetworkHashHeader: "h1"}, 200, "", "h1"},
		{"network probe without hash", nil, map[string]string{NetworkProbeHeader: "probe"}, 400, "", ""},
		{"activator probe", nil, map[string]string{NetworkProbeHeader: "activator"}, 200, "activator", ""},
		{"activator probe while draining is not a kubelet probe", draining, map[string]string{NetworkProbeHeader: "activator"}, 200, "activator", ""},
		{"other probe value", nil, map[string]string{NetworkProbeHeader: "queue"}, 400, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th := &fakeThrottler{dests: []string{"pod"}}
			h := newTestHandler(t, th, okProxy, func(c *testConfig) {
				c.Health = func() error { return tc.health }
			})
			// Any path, no revision headers.
			r := httptest.NewRequest(http.MethodGet, "http://10.0.0.1:8012/any/path", nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.wantCode {
				t.Fatalf("code = %d (%q), want %d", rec.Code, rec.Body, tc.wantCode)
			}
			if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
				t.Errorf("body = %q, want %q", rec.Body, tc.wantBody)
			}
			if got := rec.Header().Get(NetworkHashHeader); got != tc.wantHash {
				t.Errorf("hash = %q, want %q", got, tc.wantHash)
			}
			if len(th.attempts) != 0 {
				t.Errorf("probe was proxied")
			}
		})
	}
}

func TestRouting(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		headers  map[string]string
		wantCode int
		wantBody string
	}{
		{"headers", "example.com", map[string]string{proxy.RevisionHeader: "rev", proxy.NamespaceHeader: "ns"}, 200, "proxied to pod"},
		{"host fallback", "rev.ns.svc.cluster.local:80", nil, 200, "proxied to pod"},
		{"unknown revision", "example.com", map[string]string{proxy.RevisionHeader: "nope", proxy.NamespaceHeader: "ns"}, 404, "Error getting active endpoint: "},
		{"no revision at all", "example.com", nil, 404, "Error getting active endpoint: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, &fakeThrottler{dests: []string{"pod"}}, okProxy, nil)
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = tc.host
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.wantCode || !strings.HasPrefix(rec.Body.String(), tc.wantBody) {
				t.Fatalf("got %d %q, want %d %q...", rec.Code, rec.Body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

func TestThrottlerErrors(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantCode  int
		wantBody  string
		wantRetry string
	}{
		{"queue full", fmt.Errorf("rev ns/rev: %w", throttler.ErrQueueFull), 503, QueueFullBody + "\n", "1"},
		{"revision deleted", throttler.ErrRevisionDeleted, 404, "Error getting active endpoint: revision ns/rev was deleted\n", ""},
		{"deadline", context.DeadlineExceeded, 503, "context deadline exceeded\n", ""},
		{"all pods refused", fmt.Errorf("%w: refused", throttler.ErrRetryable), 502, "", ""},
		{"other", errors.New("boom"), 500, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, &fakeThrottler{err: tc.err}, okProxy, nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, revRequest(http.MethodGet))
			if rec.Code != tc.wantCode {
				t.Fatalf("code = %d, want %d", rec.Code, tc.wantCode)
			}
			if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
				t.Errorf("body = %q, want %q", rec.Body, tc.wantBody)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tc.wantRetry)
			}
		})
	}
}

type result struct {
	code    int
	body    string
	hdr     http.Header
	aborted bool
}

// serveAsync runs h in a goroutine and returns a channel of the result.
func serveAsync(h http.Handler, r *http.Request) <-chan result {
	ch := make(chan result, 1)
	go func() {
		rec := httptest.NewRecorder()
		aborted := false
		func() {
			defer func() {
				if p := recover(); p != nil {
					if p != http.ErrAbortHandler {
						panic(p)
					}
					aborted = true
				}
			}()
			h.ServeHTTP(rec, r)
		}()
		ch <- result{rec.Code, rec.Body.String(), rec.Header(), aborted}
	}()
	return ch
}

func TestTimeouts(t *testing.T) {
	type step struct {
		advance time.Duration
		write   bool // the proxy writes a chunk after the advance
	}
	tests := []struct {
		name        string
		timeouts    Timeouts
		queued      bool // the request waits in the throttler
		steps       []step
		want504     bool
		wantAborted bool // timed out after headers: the response is cut, not 504
	}{
		{name: "total while queued", timeouts: Timeouts{Total: 10 * time.Second}, queued: true,
			steps: []step{{advance: 10 * time.Second}}, want504: true},
		{name: "response start", timeouts: Timeouts{Total: time.Minute, ResponseStart: 5 * time.Second},
			steps: []step{{advance: 5 * time.Second}}, want504: true},
		{name: "response start met", timeouts: Timeouts{Total: time.Minute, ResponseStart: 5 * time.Second},
			steps: []step{{advance: 4 * time.Second, write: true}, {advance: 2 * time.Second}, {advance: time.Minute}}, wantAborted: true},
		{name: "idle before any byte", timeouts: Timeouts{Total: time.Minute, Idle: 3 * time.Second},
			steps: []step{{advance: 3 * time.Second}}, want504: true},
		{name: "idle after headers aborts", timeouts: Timeouts{Total: time.Minute, Idle: 3 * time.Second},
			steps: []step{{advance: 2 * time.Second, write: true}, {advance: 2 * time.Second, write: true}, {advance: 3 * time.Second}}, wantAborted: true},
		{name: "total while streaming aborts", timeouts: Timeouts{Total: 10 * time.Second},
			steps: []step{{advance: time.Second, write: true}, {advance: 9 * time.Second}}, wantAborted: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Now())
			writes := make(chan struct{})
			wrote := make(chan error)
			inProxy := make(chan struct{})
			p := funcProxy(func(w http.ResponseWriter, r *http.Request, dest string) error {
				close(inProxy)
				for {
					select {
					case <-r.Context().Done():
						return nil
					case <-writes:
						_, err := io.WriteString(w, "chunk")
						w.(http.Flusher).Flush()
						wrote <- err
						if err != nil {
							panic(http.ErrAbortHandler) // as ReverseProxy does
						}
					}
				}
			})
			th := &fakeThrottler{dests: []string{"pod"}, block: tc.queued, started: make(chan struct{})}
			info := testInfo()
			info.Timeout, info.ResponseStartTimeout, info.IdleTimeout = tc.timeouts.Total, tc.timeouts.ResponseStart, tc.timeouts.Idle
			h := newTestHandler(t, th, p, func(c *testConfig) {
				c.Clock = clk
				c.Revisions = fakeRevisions{testRev: info}
			})
			res := serveAsync(h, revRequest(http.MethodGet))
			<-th.started
			if !tc.queued {
				<-inProxy
			}
			for _, s := range tc.steps {
				clk.Step(s.advance)
				if s.write {
					writes <- struct{}{}
					if err := <-wrote; err != nil {
						t.Fatalf("write before timeout failed: %v", err)
					}
				}
			}
			got := <-res
			if got.aborted != tc.wantAborted {
				t.Fatalf("aborted = %v, want %v", got.aborted, tc.wantAborted)
			}
			if tc.want504 {
				if got.code != http.StatusGatewayTimeout || got.body != TimeoutBody {
					t.Fatalf("got %d %q, want 504 %q", got.code, got.body, TimeoutBody)
				}
				return
			}
			if got.code != 200 || !strings.HasPrefix(got.body, "chunk") {
				t.Fatalf("got %d %q, want the streamed 200 cut off", got.code, got.body)
			}
		})
	}
}

func TestReporterCountsQueuedRequestsAndPokes(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	sink := &pokeSink{pokes: make(chan wire.StatMessage, 1)}
	rep := concurrency.New("act-0", sink, clk, nil)
	th := &fakeThrottler{block: true, started: make(chan struct{})}
	h := newTestHandler(t, th, okProxy, func(c *testConfig) { c.Reporter = rep })
	ctx, cancel := context.WithCancel(context.Background())
	res := serveAsync(h, revRequest(http.MethodGet).WithContext(ctx))
	<-th.started
	// The poke left before the request got any capacity.
	select {
	case p := <-sink.pokes:
		if p.Key != testRev || p.Stat.AverageConcurrentRequests != 1 || p.Stat.RequestCount != 1 || p.Stat.PodName != "act-0" {
			t.Fatalf("poke = %+v", p)
		}
	default:
		t.Fatal("no poke while the request is queued")
	}
	clk.Step(500 * time.Millisecond)
	cancel()
	<-res
	clk.Step(500 * time.Millisecond)
	msgs := rep.Report(clk.Now())
	if len(msgs) != 1 || msgs[0].Stat.RequestCount != 0 || msgs[0].Stat.AverageConcurrentRequests != 0 {
		t.Fatalf("report = %+v (queued half-second request, minus the poke)", msgs)
	}
}

type pokeSink struct{ pokes chan wire.StatMessage }

func (p *pokeSink) Poke(m wire.StatMessage)   { p.pokes <- m }
func (p *pokeSink) Report([]wire.StatMessage) {}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	th := &fakeThrottler{block: true, started: make(chan struct{})}
	h := newTestHandler(t, th, okProxy, func(c *testConfig) { c.Metrics = m })
	ctx, cancel := context.WithCancel(context.Background())
	res := serveAsync(h, revRequest(http.MethodGet).WithContext(ctx))
	<-th.started
	if v := gaugeValue(t, reg, "kn_revision_request_queued"); v != 1 {
		t.Fatalf("queued = %v while waiting, want 1", v)
	}
	cancel()
	<-res
	if v := gaugeValue(t, reg, "kn_revision_request_queued"); v != 0 {
		t.Fatalf("queued = %v after, want 0", v)
	}
	h2 := newTestHandler(t, &fakeThrottler{dests: []string{"pod"}}, funcProxy(func(w http.ResponseWriter, r *http.Request, _ string) error {
		if v := gaugeValue(t, reg, "kn_revision_request_active"); v != 1 {
			t.Errorf("active = %v while proxying, want 1", v)
		}
		w.WriteHeader(http.StatusTeapot)
		return nil
	}), func(c *testConfig) { c.Metrics = m })
	h2.ServeHTTP(httptest.NewRecorder(), revRequest(http.MethodPost))
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "http_server_request_duration_seconds" {
			continue
		}
		for _, met := range mf.Metric {
			l := map[string]string{}
			for _, lp := range met.Label {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["http_response_status_code"] == "418" && l["http_request_method"] == "POST" && l["kn_revision_name"] == "rev" &&
				l["kn_service_name"] == "svc" && l["url_scheme"] == "http" && l["network_protocol_name"] == "http" &&
				l["server_address"] != "" && met.GetHistogram().GetSampleCount() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("no duration sample for the 418: %v", mfs)
	}
	m.DeleteRevision(testRev)
	if n := countSeries(t, reg); n != 0 {
		t.Fatalf("%d series left after DeleteRevision", n)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	return -1
}

func countSeries(t *testing.T, reg *prometheus.Registry) int {
	mfs, _ := reg.Gather()
	n := 0
	for _, mf := range mfs {
		n += len(mf.Metric)
	}
	return n
}

// TestServerLabelsValidUTF8: the Host is the client's, and a label value that is not UTF-8 makes
// client_golang panic (found by FuzzHandler).
func TestServerLabelsValidUTF8(t *testing.T) {
	tests := []struct{ host, wantHost, wantPort string }{
		{host: "rev.ns.example.com", wantHost: "rev.ns.example.com"},
		{host: "rev.ns.example.com:8080", wantHost: "rev.ns.example.com", wantPort: "8080"},
		{host: "\xc1", wantHost: "\uFFFD"},
		{host: "a\xc1b:80", wantHost: "a\uFFFDb"},
		{host: "a:\xc1", wantHost: "a", wantPort: "\uFFFD"},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = tc.host
		_, host, port := serverLabels(r)
		if host != tc.wantHost || port != tc.wantPort {
			t.Errorf("serverLabels(Host %q) = %q, %q, want %q, %q", tc.host, host, port, tc.wantHost, tc.wantPort)
		}
	}
}

// TestActivationWithoutLookup: a chain wired without LookupRevision answers 500 with a clear body
// (and Instrument passes such a request through unmeasured) instead of crashing.
func TestActivationWithoutLookup(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{
		{"activation alone", NewHandler(Config{Throttler: &fakeThrottler{}, Proxy: okProxy, Logger: zaptest.NewLogger(t).Sugar()})},
		{"instrumented", Instrument(InstrumentConfig{Metrics: m},
			NewHandler(Config{Throttler: &fakeThrottler{}, Proxy: okProxy, Logger: zaptest.NewLogger(t).Sugar()}))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, revRequest(http.MethodGet))
			if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "no revision") {
				t.Fatalf("got %d %q, want 500 naming the missing revision", rec.Code, rec.Body)
			}
		})
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("%d metric families (%v) for requests that were not instrumented, want none", len(mfs), err)
	}
}
