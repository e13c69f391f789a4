// Package activator_test measures the latency Thaw's activator adds over a
// bare reverse-proxy hop, and its requests per CPU-second. It runs only with
// THAW_PERF=1:
//
//	THAW_PERF=1 go test -run TestActivatorOverhead -v -timeout 10m ./perf/activator
//
// THAW_PERF_RPS (default 1000) and THAW_PERF_SECONDS (default 10, seconds
// per path, run as interleaved one-second rounds) tune it.
// The backend is an upstream queue-proxy pod in a network namespace when the
// pod harness can run (root, THAW_QUEUE_PROXY set), else an in-process app;
// THAW_PERF_BACKEND=host:port names another one.
package activator_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator"
	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/pkg/wire"
	"github.com/thaw-dev/thaw/test/podharness"
)

var rev = types.NamespacedName{Namespace: "perf", Name: "rev"}

type revs struct{ info *revisions.Info }

func (r revs) Get(ns, name string) (*revisions.Info, error) {
	if ns == rev.Namespace && name == rev.Name {
		return r.info, nil
	}
	return nil, revisions.ErrNotFound
}

type nopSink struct{}

func (nopSink) Poke(wire.StatMessage)     {}
func (nopSink) Report([]wire.StatMessage) {}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type run struct {
	name     string
	p50, p99 time.Duration
	success  float64
	requests uint64
	cpu      time.Duration
}

// path accumulates the results of one path over interleaved rounds, so that
// load from elsewhere on the machine hits every path alike.
type path struct {
	name, target string
	m            vegeta.Metrics
	cpu          time.Duration
}

func (p *path) run() run {
	p.m.Close()
	return run{name: p.name, p50: p.m.Latencies.P50, p99: p.m.Latencies.P99, success: p.m.Success, requests: p.m.Requests, cpu: p.cpu}
}

func attack(t *testing.T, p *path, rps, secs int) {
	t.Helper()
	name, target := p.name, p.target
	tgt := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: target, Header: http.Header{
		"Knative-Serving-Revision":  {rev.Name},
		"Knative-Serving-Namespace": {rev.Namespace},
	}})
	atk := vegeta.NewAttacker(vegeta.KeepAlive(true), vegeta.Timeout(10*time.Second))
	cpu0 := cpuTime()
	for res := range atk.Attack(tgt, vegeta.ConstantPacer{Freq: rps, Per: time.Second}, time.Duration(secs)*time.Second, name) {
		p.m.Add(res)
	}
	p.cpu += cpuTime() - cpu0
}

func TestActivatorOverhead(t *testing.T) {
	if os.Getenv("THAW_PERF") != "1" {
		t.Skip("set THAW_PERF=1 to run the activator benchmark")
	}
	rps, secs := envInt("THAW_PERF_RPS", 1000), envInt("THAW_PERF_SECONDS", 10)
	logger := zap.NewNop().Sugar()

	backend := os.Getenv("THAW_PERF_BACKEND")
	if backend == "" && podharness.Requirements() == "" {
		// The same upstream queue-proxy pod (with its test app) for every path.
		pod := podharness.NewNetwork(t).StartPod(t, podharness.PodOptions{})
		backend = pod.Dest()
		t.Logf("backend: queue-proxy pod at %s", backend)
	}
	if backend == "" {
		t.Log("backend: in-process app (run as root with THAW_QUEUE_PROXY set for a queue-proxy pod)")
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}))
		defer app.Close()
		backend = strings.TrimPrefix(app.URL, "http://")
	}

	// A bare httputil.ReverseProxy hop.
	u, _ := url.Parse("http://" + backend)
	bareRP := httputil.NewSingleHostReverseProxy(u)
	bareRP.Transport = &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 100, DisableCompression: true,
		DialContext: (&net.Dialer{}).DialContext}
	bare := httptest.NewServer(bareRP)
	defer bare.Close()

	// Thaw's activator: the full handler chain with the real throttler,
	// proxy and concurrency reporter.
	thr := throttler.New("10.0.0.1", throttler.Options{}, clock.RealClock{}, logger)
	thr.UpsertRevision(rev, throttler.RevisionConfig{})
	thr.UpdateBackends(rev, throttler.Backends{Dests: []string{backend}})
	tr := proxy.NewTransport(1000, 100)
	// The chain as cmd/activator builds it.
	act := activator.NewHandler(activator.Config{
		Throttler: thr,
		Proxy:     proxy.New(tr, logger, proxy.Options{}),
		IsNotSent: func(error) bool { return false },
		Reporter:  concurrency.New("perf", nopSink{}, clock.RealClock{}, nil),
		Logger:    logger,
	})
	h := activator.Probes(nil, activator.LookupRevision(
		revs{&revisions.Info{ID: rev, Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second}},
		"", logger, activator.Instrument(activator.InstrumentConfig{}, act)))
	thaw := httptest.NewServer(h)
	defer thaw.Close()

	paths := []*path{{name: "direct", target: "http://" + backend}, {name: "bare-proxy", target: bare.URL}, {name: "thaw", target: thaw.URL}}
	for _, p := range paths {
		attack(t, &path{name: "warmup", target: p.target}, rps, 1)
	}
	// Interleaved rounds of one second per path.
	for i := 0; i < secs; i++ {
		for _, p := range paths {
			attack(t, p, rps, 1)
		}
	}
	direct, bareRun, thawRun := paths[0].run(), paths[1].run(), paths[2].run()

	for _, r := range []run{direct, bareRun, thawRun} {
		t.Logf("%-10s requests=%d success=%.4f p50=%v p99=%v cpu=%v", r.name, r.requests, r.success, r.p50, r.p99, r.cpu)
		if r.success < 0.999 {
			t.Errorf("%s: success %.4f", r.name, r.success)
		}
	}
	perCPU := func(r run) float64 {
		extra := r.cpu - direct.cpu
		if extra <= 0 {
			return 0
		}
		return float64(r.requests) / extra.Seconds()
	}
	t.Logf("added latency vs bare proxy: p50 %+v, p99 %+v", thawRun.p50-bareRun.p50, thawRun.p99-bareRun.p99)
	t.Logf("added latency vs direct: thaw p50 %+v p99 %+v; bare p50 %+v p99 %+v",
		thawRun.p50-direct.p50, thawRun.p99-direct.p99, bareRun.p50-direct.p50, bareRun.p99-direct.p99)
	t.Logf("requests per CPU-second of the hop (CPU over the direct run): thaw %.0f, bare proxy %.0f", perCPU(thawRun), perCPU(bareRun))
}
