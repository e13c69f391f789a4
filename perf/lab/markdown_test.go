//go:build e2e

package lab

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// markdown renders the report: one table per benchmark, upstream and Thaw side by side.
func (r *results) markdown(cfg config, elapsed time.Duration) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "# Lab benchmarks: Thaw vs upstream\n\n")
	fmt.Fprintf(&b, "Run %s UTC on the lab (%d CPUs), %s in all: each benchmark with upstream's activator and "+
		"autoscaler, then with Thaw's swapped in, in the same run. Command: `make bench-lab` "+
		"(`THAW_PERF_LAB=1 go test -tags e2e -run TestLabPerf ./perf/lab/`). Ratios are Thaw/upstream "+
		"(below 1 is better for Thaw). Latencies in ms.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04"), runtime.NumCPU(), elapsed.Round(time.Second))

	fmt.Fprintf(&b, "## dataplane-probe\n\n%s requests/s for %s per path and rate (the paths take turns, %d rounds) against `?sleep=%d` (upstream: 1000/s for 3 min); "+
		"one pod (min-scale = max-scale = 1, TBC -1, CC 0); `direct` is the user container, `queue-proxy` the pod's :8012, "+
		"`activator` the activator pod's :8012 with the revision headers. Everything (load generator, "+
		"activator, queue-proxy, app, the cluster) shares the same CPUs; the activator Deployment's CPU limit "+
		"(1 core) is upstream's, for both sides.\n\n", joinInts(cfg.rates, ", "), cfg.seconds, cfg.rounds, cfg.sleepMs)
	dp := Table{Header: []string{"req/s", "path", "side", "requests", "errors", "p50", "p95", "p99", "max", "codes"}}
	for _, rate := range cfg.rates {
		for _, p := range paths {
			for _, sd := range []string{"upstream", "thaw"} {
				s, ok := r.dataplane[sd][dpKey{rate, p}]
				if !ok {
					dp.Add(fmt.Sprint(rate), p, sd, "not run")
					continue
				}
				dp.Add(fmt.Sprint(rate), p, sd, fmt.Sprint(s.Requests), fmt.Sprint(s.Errors), Ms(s.P50), Ms(s.P95), Ms(s.P99), Ms(s.Max), s.CodesString())
			}
		}
	}
	b.WriteString(dp.Markdown())
	added := Table{Header: []string{"req/s", "activator added latency (activator − queue-proxy)", "upstream", "thaw", "ratio"}}
	for _, rate := range cfg.rates {
		for _, q := range []struct {
			name string
			of   func(Summary) time.Duration
		}{{"p50", func(s Summary) time.Duration { return s.P50 }}, {"p95", func(s Summary) time.Duration { return s.P95 }},
			{"p99", func(s Summary) time.Duration { return s.P99 }}} {
			u, uok := addedLatency(r.dataplane["upstream"], rate, q.of)
			th, tok := addedLatency(r.dataplane["thaw"], rate, q.of)
			if !uok || !tok {
				added.Add(fmt.Sprint(rate), q.name, "n/a", "n/a", "n/a")
				continue
			}
			added.Add(fmt.Sprint(rate), q.name, Ms(u), Ms(th), Ratio(float64(th), float64(u)))
		}
	}
	b.WriteString("\nThe added latency is a difference of quantiles (not a quantile of differences); at a few tenths of a ms it is " +
		"within the run-to-run noise of this machine.\n\n" + added.Markdown())
	cpu := Table{Header: []string{"req/s", "side", "activator CPU per request (µs)", "ratio", "cores used", "CFS periods throttled", "throttled time (ms)"}}
	for _, rate := range cfg.rates {
		per := map[string]float64{}
		for _, sd := range []string{"upstream", "thaw"} {
			c, ok := r.cpu[sd][dpKey{rate, "activator"}]
			s := r.dataplane[sd][dpKey{rate, "activator"}]
			if !ok || !c.ok || s.Requests == 0 {
				cpu.Add(fmt.Sprint(rate), sd, "n/a")
				continue
			}
			per[sd] = float64(c.usage) / float64(time.Microsecond) / float64(s.Requests)
			ratio := ""
			if sd == "thaw" {
				ratio = Ratio(per["thaw"], per["upstream"])
			}
			cpu.Add(fmt.Sprint(rate), sd, fmt.Sprintf("%.0f", per[sd]), ratio, fmt.Sprintf("%.2f", c.usage.Seconds()/cfg.seconds.Seconds()),
				fmt.Sprintf("%d/%d", c.throttled, c.periods), fmt.Sprint(c.throttledTime.Milliseconds()))
		}
	}
	b.WriteString("\nThe activator's CPU while the activator path ran (its container's cgroup; the Deployment's limit is 1 core):\n\n" + cpu.Markdown())

	fmt.Fprintf(&b, "\n## load-test\n\nFrom zero (a fresh ksvc at initial-scale 0, target %d, TBC -1: flavor `always`), "+
		"stepped rates of %s each through the lab ingress against `?sleep=%d` (upstream: 1k→2k→3k/s, 2 min each, on 10 nodes).\n\n",
		cfg.target, cfg.stepDur, cfg.sleepMs)
	lt := Table{Header: []string{"step (req/s)", "upstream p95", "thaw p95", "ratio", "upstream max", "thaw max", "ratio",
		"upstream errors", "thaw errors", "ready pods (up/thaw)"}}
	for i, rate := range cfg.steps {
		u, uok := stepAt(r.load["upstream"], i)
		th, tok := stepAt(r.load["thaw"], i)
		cell := func(ok bool, s stepResult, f func(stepResult) string) string {
			if !ok {
				return "n/a"
			}
			return f(s)
		}
		p95 := func(s stepResult) string { return Ms(s.sum.P95) }
		mx := func(s stepResult) string { return Ms(s.sum.Max) }
		errs := func(s stepResult) string { return fmt.Sprintf("%d/%d", s.sum.Errors, s.sum.Requests) }
		pr95, prMax := "n/a", "n/a"
		if uok && tok {
			pr95 = Ratio(float64(th.sum.P95), float64(u.sum.P95))
			prMax = Ratio(float64(th.sum.Max), float64(u.sum.Max))
		}
		lt.Add(fmt.Sprint(rate), cell(uok, u, p95), cell(tok, th, p95), pr95, cell(uok, u, mx), cell(tok, th, mx), prMax,
			cell(uok, u, errs), cell(tok, th, errs),
			cell(uok, u, func(s stepResult) string { return fmt.Sprint(s.pods) })+"/"+cell(tok, th, func(s stepResult) string { return fmt.Sprint(s.pods) }))
	}
	b.WriteString(lt.Markdown())
	if u, uok := stepAt(r.load["upstream"], 0); uok {
		if th, tok := stepAt(r.load["thaw"], 0); tok {
			fmt.Fprintf(&b, "\nFirst 200 from zero (the cold start under load): upstream %s ms, thaw %s ms (%s).\n",
				Ms(u.firstOK), Ms(th.firstOK), Ratio(float64(th.firstOK), float64(u.firstOK)))
		}
	}

	capacity := 1000 / cfg.ovSleepMs
	fmt.Fprintf(&b, "\n## activator RSS under %d× overload\n\nOne pod, containerConcurrency 1, `?sleep=%d` (capacity %d req/s), "+
		"offered %d req/s for %s straight to the activator pod; requests still queued when the load ends are cancelled by "+
		"the client (`cut`). Both sides run with the default queue bounds (Thaw: 10000 per revision, 20000 in all; "+
		"upstream: none in practice). RSS is the activator process's VmRSS, sampled each second, in MiB.\n\n",
		cfg.ovFactor, cfg.ovSleepMs, capacity, cfg.ovFactor*capacity, cfg.ovDur)
	ov := Table{Header: []string{"side", "RSS start", "RSS max", "RSS end", "RSS 5 s after", "max − start", "200", "503", "504", "cut", "other", "restarts"}}
	for _, sd := range []string{"upstream", "thaw"} {
		o := r.overload[sd]
		if o == nil {
			ov.Add(sd, "not run")
			continue
		}
		c := o.sum.Codes
		other := o.sum.Requests - c[200] - c[503] - c[504] - o.cut
		ov.Add(sd, MiB(o.start), MiB(o.max), MiB(o.end), MiB(o.after), MiB(o.max-o.start),
			fmt.Sprint(c[200]), fmt.Sprint(c[503]), fmt.Sprint(c[504]), fmt.Sprint(o.cut), fmt.Sprint(other), fmt.Sprint(o.restarts))
	}
	if u, th := r.overload["upstream"], r.overload["thaw"]; u != nil && th != nil {
		ov.Add("ratio", Ratio(float64(th.start), float64(u.start)), Ratio(float64(th.max), float64(u.max)),
			Ratio(float64(th.end), float64(u.end)), Ratio(float64(th.after), float64(u.after)),
			Ratio(float64(th.max-th.start), float64(u.max-u.start)))
	}
	b.WriteString(ov.Markdown())
	series := Table{Header: []string{"second", "upstream RSS", "thaw RSS"}}
	u, th := r.overload["upstream"], r.overload["thaw"]
	n := 0
	if u != nil {
		n = len(u.series)
	}
	if th != nil {
		n = max(n, len(th.series))
	}
	at := func(o *overloadResult, i int) string {
		if o == nil || i >= len(o.series) {
			return ""
		}
		return MiB(o.series[i])
	}
	for i := 4; i < n; i += 5 {
		series.Add(fmt.Sprint(i+1), at(u, i), at(th, i))
	}
	if n > 0 {
		b.WriteString("\nRSS every 5 s during the load:\n\n" + series.Markdown())
	}
	return b.String()
}

// addedLatency is the activator path's quantile minus the queue-proxy path's.
func addedLatency(dp map[dpKey]Summary, rate int, of func(Summary) time.Duration) (time.Duration, bool) {
	a, ok1 := dp[dpKey{rate, "activator"}]
	q, ok2 := dp[dpKey{rate, "queue-proxy"}]
	if !ok1 || !ok2 {
		return 0, false
	}
	return of(a) - of(q), true
}

func stepAt(s []stepResult, i int) (stepResult, bool) {
	if i < len(s) {
		return s[i], true
	}
	return stepResult{}, false
}

func joinInts(v []int, sep string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, sep)
}
