//go:build e2e

package lab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	corev1 "k8s.io/api/core/v1"

	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

// config holds the run's knobs (environment, see README.md).
type config struct {
	report string
	// dataplane-probe: each rate in turn
	rates   []int
	seconds time.Duration // per path and rate, in rounds
	rounds  int
	sleepMs int
	// load-test
	steps   []int
	stepDur time.Duration
	target  int
	// overload
	ovSleepMs int
	ovFactor  int
	ovDur     time.Duration
}

func envInt(t *testing.T, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}

func loadConfig(t *testing.T) config {
	c := config{
		report:    os.Getenv("THAW_PERF_LAB_REPORT"),
		seconds:   time.Duration(envInt(t, "THAW_PERF_LAB_SECONDS", 20)) * time.Second,
		rounds:    envInt(t, "THAW_PERF_LAB_ROUNDS", 4),
		sleepMs:   100,
		stepDur:   time.Duration(envInt(t, "THAW_PERF_LAB_STEP_SECONDS", 20)) * time.Second,
		target:    envInt(t, "THAW_PERF_LAB_TARGET", 10),
		ovSleepMs: envInt(t, "THAW_PERF_LAB_OVERLOAD_SLEEP_MS", 25),
		ovFactor:  10,
		ovDur:     time.Duration(envInt(t, "THAW_PERF_LAB_OVERLOAD_SECONDS", 40)) * time.Second,
	}
	if c.report == "" {
		c.report = filepath.Join(env.repo, "bin", "perf-lab-report.md")
	} else if !filepath.IsAbs(c.report) {
		c.report = filepath.Join(env.repo, c.report)
	}
	c.rates = envRates(t, "THAW_PERF_LAB_RPS", "1000,250")
	c.steps = envRates(t, "THAW_PERF_LAB_STEPS", "50,100,150")
	return c
}

func envRates(t *testing.T, key, def string) []int {
	v := os.Getenv(key)
	if v == "" {
		v = def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want comma-separated positive rates", key, v)
		}
		out = append(out, n)
	}
	return out
}

// side is one set of components under test.
type side struct {
	name   string
	images swap.Images
}

// Dataplane paths, in the order they run.
var paths = []string{"direct", "queue-proxy", "activator"}

type dpKey struct {
	rate int
	path string
}

type stepResult struct {
	rate int
	sum  Summary
	// firstOK is when the first 200 came back (the cold start, in the first step).
	firstOK time.Duration
	pods    int // ready pods at the end of the step
}

type overloadResult struct {
	capacity, offered int
	start, max, end   int64
	after             int64 // 5 s after the load was cut
	series            []int64
	sum               Summary
	cut               int // requests still in flight (queued) when the load ended
	restarts          int32
}

// results of both sides, filled by the subtests and rendered at the end.
type results struct {
	mu        sync.Mutex
	dataplane map[string]map[dpKey]Summary // side → rate and path
	cpu       map[string]map[dpKey]cpuStat // the activator's, during each dataplane run
	load      map[string][]stepResult
	overload  map[string]*overloadResult
}

func TestLabPerf(t *testing.T) {
	if env.upErr != nil {
		t.Fatalf("lab not up: %v", env.upErr)
	}
	cfg := loadConfig(t)
	ctx := context.Background()
	res := &results{dataplane: map[string]map[dpKey]Summary{}, cpu: map[string]map[dpKey]cpuStat{}, load: map[string][]stepResult{}, overload: map[string]*overloadResult{}}
	t0 := time.Now()
	t.Cleanup(func() {
		if err := os.MkdirAll(filepath.Dir(cfg.report), 0o755); err != nil {
			t.Error(err)
			return
		}
		if err := os.WriteFile(cfg.report, []byte(res.markdown(cfg, time.Since(t0))), 0o644); err != nil {
			t.Error(err)
			return
		}
		t.Logf("report written to %s", cfg.report)
	})
	// Both sides hit the same pods: the services are created once, before the first swap.
	dpRev := setupKsvc(t, "perf-dp", map[string]string{
		"autoscaling.knative.dev/min-scale":             "1",
		"autoscaling.knative.dev/max-scale":             "1",
		"autoscaling.knative.dev/target-burst-capacity": "-1",
	}, 0)
	ovRev := setupKsvc(t, "perf-ov", map[string]string{
		"autoscaling.knative.dev/min-scale":             "1",
		"autoscaling.knative.dev/max-scale":             "1",
		"autoscaling.knative.dev/target-burst-capacity": "-1",
	}, 1)
	for _, sd := range []side{{"upstream", stack.UpstreamImages()}, {"thaw", stack.ThawImages()}} {
		t.Run(sd.name, func(t *testing.T) {
			act := swapTo(ctx, t, sd.images)
			t.Run("dataplane", func(t *testing.T) { dataplane(ctx, t, cfg, sd.name, act, dpRev, res) })
			t.Run("loadtest", func(t *testing.T) { loadTest(ctx, t, cfg, sd.name, res) })
			t.Run("overload", func(t *testing.T) { overload(ctx, t, cfg, sd.name, act, ovRev, res) })
		})
	}
}

func revHeaders(rev string) http.Header {
	return http.Header{"Knative-Serving-Revision": {rev}, "Knative-Serving-Namespace": {ns}}
}

// dataplane is upstream's dataplane-probe: a constant rate against a 100 ms handler, straight to the
// user container, to its queue-proxy, and through the activator.
func dataplane(ctx context.Context, t *testing.T, cfg config, sideName string, act *corev1.Pod, rev string, res *results) {
	pod, err := readyPod(ctx, ns, "serving.knative.dev/service=perf-dp", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	q := fmt.Sprintf("/?sleep=%d", cfg.sleepMs)
	targets := map[string]vegeta.Target{
		"direct":      {Method: http.MethodGet, URL: "http://" + pod.Status.PodIP + ":8080" + q},
		"queue-proxy": {Method: http.MethodGet, URL: "http://" + pod.Status.PodIP + ":8012" + q},
		"activator":   {Method: http.MethodGet, URL: "http://" + act.Status.PodIP + ":8012" + q, Header: revHeaders(rev)},
	}
	if err := waitOK(ctx, targets["activator"].URL, targets["activator"].Header, time.Minute); err != nil {
		t.Fatal(err)
	}
	pid, err := containerPID(act, "activator")
	if err != nil {
		t.Fatal(err)
	}
	out, cpu := map[dpKey]Summary{}, map[dpKey]cpuStat{}
	for _, rate := range cfg.rates {
		// Warm-up: connections, the activator's pod probes and Go's allocator, not measured.
		for _, p := range paths {
			attack{target: targets[p], rate: rate, dur: 2 * time.Second, timeout: 30 * time.Second}.run(ctx)
		}
		// The paths take turns in short rounds, so a slow drift of the machine (another pod's work, GC)
		// lands on all of them alike and the activator − queue-proxy difference stays fair.
		samples := map[string][]Sample{}
		usage := map[string]cpuStat{}
		for range cfg.rounds {
			for _, p := range paths {
				before := readCPU(pid)
				samples[p] = append(samples[p], attack{target: targets[p], rate: rate, dur: cfg.seconds / time.Duration(cfg.rounds),
					timeout: 30 * time.Second}.run(ctx)...)
				c := readCPU(pid).sub(before)
				u := usage[p]
				u.usage += c.usage
				u.periods += c.periods
				u.throttled += c.throttled
				u.throttledTime += c.throttledTime
				u.ok = c.ok
				usage[p] = u
			}
		}
		for _, p := range paths {
			s, c := Summarize(samples[p]), usage[p]
			out[dpKey{rate, p}], cpu[dpKey{rate, p}] = s, c
			t.Logf("%s %d/s %s: %d requests, p50 %s p95 %s p99 %s max %s ms, codes %s; activator CPU %s, throttled %d/%d periods",
				sideName, rate, p, s.Requests, Ms(s.P50), Ms(s.P95), Ms(s.P99), Ms(s.Max), s.CodesString(), c.usage.Round(time.Millisecond),
				c.throttled, c.periods)
		}
	}
	res.mu.Lock()
	res.dataplane[sideName], res.cpu[sideName] = out, cpu
	res.mu.Unlock()
}

// loadTest is upstream's load-test from zero (flavor "always": TBC -1 keeps the activator in the
// path): a fresh ksvc at zero, then stepped rates through the lab's ingress.
func loadTest(ctx context.Context, t *testing.T, cfg config, sideName string, res *results) {
	name := "perf-lt-" + sideName
	setupKsvc(t, name, map[string]string{
		"autoscaling.knative.dev/initial-scale":         "0",
		"autoscaling.knative.dev/target":                strconv.Itoa(cfg.target),
		"autoscaling.knative.dev/target-burst-capacity": "-1",
	}, 0)
	if n := readyPodCount(ctx, name); n != 0 {
		t.Fatalf("%s has %d ready pods before the first request, want 0", name, n)
	}
	tg := vegeta.Target{Method: http.MethodGet, URL: fmt.Sprintf("http://%s/?sleep=%d", env.stack.IngressAddr(), cfg.sleepMs),
		Header: http.Header{"Host": {ksvc.Host(name, ns, stack.Domain)}}}
	var steps []stepResult
	for _, rate := range cfg.steps {
		samples := attack{target: tg, rate: rate, dur: cfg.stepDur, timeout: 30 * time.Second}.run(ctx)
		s := Summarize(samples)
		first, _ := FirstOK(samples)
		pods := readyPodCount(ctx, name)
		steps = append(steps, stepResult{rate: rate, sum: s, firstOK: first, pods: pods})
		t.Logf("%s load %d/s: %d requests, p50 %s p95 %s max %s ms, first 200 after %s ms, codes %s, %d ready pods", sideName, rate,
			s.Requests, Ms(s.P50), Ms(s.P95), Ms(s.Max), Ms(first), s.CodesString(), pods)
	}
	res.mu.Lock()
	res.load[sideName] = steps
	res.mu.Unlock()
}

// overload offers ovFactor× the capacity of a one-pod, CC=1 revision through the activator and
// samples the activator process's RSS each second.
func overload(ctx context.Context, t *testing.T, cfg config, sideName string, act *corev1.Pod, rev string, res *results) {
	url := fmt.Sprintf("http://%s:8012/?sleep=%d", act.Status.PodIP, cfg.ovSleepMs)
	if err := waitOK(ctx, url, revHeaders(rev), time.Minute); err != nil {
		t.Fatal(err)
	}
	pid, err := containerPID(act, "activator")
	if err != nil {
		t.Fatal(err)
	}
	r := &overloadResult{capacity: 1000 / cfg.ovSleepMs}
	r.offered = cfg.ovFactor * r.capacity
	r0 := restarts(ctx, act.Name, "activator")
	if r.start, err = vmRSS(pid); err != nil {
		t.Fatal(err)
	}
	sctx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tk.C:
				// A restarted (OOM-killed) activator has no RSS here: record 0, the restart count says why.
				v, _ := vmRSS(pid)
				r.series = append(r.series, v)
				r.max = max(r.max, v)
			}
		}
	}()
	samples := attack{target: vegeta.Target{Method: http.MethodGet, URL: url, Header: revHeaders(rev)},
		rate: r.offered, dur: cfg.ovDur, timeout: cfg.ovDur + 30*time.Second, cut: true}.run(ctx)
	stopSampling()
	<-sampled
	if n := len(r.series); n > 0 {
		r.end = r.series[n-1]
	}
	for _, s := range samples {
		if s.Code == 0 {
			r.cut++
		}
	}
	r.sum = Summarize(samples)
	time.Sleep(5 * time.Second)
	r.after, _ = vmRSS(pid)
	r.restarts = restarts(ctx, act.Name, "activator") - r0
	t.Logf("%s overload %d/s (capacity %d/s): RSS start %s max %s end %s after %s MiB, codes %s, restarts %d",
		sideName, r.offered, r.capacity, MiB(r.start), MiB(r.max), MiB(r.end), MiB(r.after), r.sum.CodesString(), r.restarts)
	res.mu.Lock()
	res.overload[sideName] = r
	res.mu.Unlock()
}
