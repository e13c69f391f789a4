package replay

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

// Tolerance is the bound on the difference between the cluster's
// cold starts and the simulation's for the same window and policy.
const Tolerance = 0.10

// Comparison sets one policy's run on one side against the simulation of
// the same requests.
type Comparison struct {
	Side, Policy string
	// Settings are the cluster's windows for the policy.
	Settings  string
	Functions int
	Requests  int
	Failed    int
	// Lab*: the cluster. ColdStarts are the Deployments' scale-ups from
	// zero (pre-warms included), ColdRequests the requests that found no
	// ready pod.
	LabColdStarts, LabColdRequests int
	// Sim*: the simulation of the cluster's run: the same requests on the
	// wall clock, the cluster's windows, the cold-start time measured on
	// the cluster (ColdStart). ColdStarts include pre-warms.
	SimColdStarts, SimColdRequests int
	ColdStart                      time.Duration
	// Trace*: `thaw replay --simulate` of the same functions and window in
	// trace time, the policy's own windows.
	TraceColdStarts, TraceColdRequests int
	// StartsDiff and RequestsDiff are lab/sim - 1.
	StartsDiff, RequestsDiff float64
	// OK: cold starts within Tolerance of the simulation's and no failed
	// request.
	OK bool
}

func diff(lab, sim int) float64 {
	if sim == 0 {
		if lab == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return float64(lab)/float64(sim) - 1
}

// ColdStartTime is the median time the requests that started a cold start
// (sent with the Deployment at zero) waited beyond their execution time;
// ok is false when there was none.
func ColdStartTime(outs []Outcome) (time.Duration, bool) {
	var w []time.Duration
	for i := range outs {
		o := &outs[i]
		if o.OK() && o.Cold && o.Replicas == 0 {
			w = append(w, o.Waited())
		}
	}
	if len(w) == 0 {
		return 0, false
	}
	sort.Slice(w, func(a, b int) bool { return w[a] < w[b] })
	return w[len(w)/2], true
}

// ColdStartCurve is the cold-start time a side measured along its run: the
// median wait of the requests that started a cold start (as
// ColdStartTime), in steps of step by their planned offset; a step without
// one takes the nearest step that has one, the earlier on a tie. It is nil
// when the side measured none.
func ColdStartCurve(p *Plan, outs []Outcome, step time.Duration) func(time.Duration) time.Duration {
	if step <= 0 {
		return nil
	}
	bins := map[int][]time.Duration{}
	last := -1
	for i := range outs {
		o := &outs[i]
		if !o.OK() || !o.Cold || o.Replicas != 0 || o.Arrival < 0 || o.Arrival >= len(p.Arrivals) {
			continue
		}
		b := int(p.Arrivals[o.Arrival].At / step)
		bins[b] = append(bins[b], o.Waited())
		last = max(last, b)
	}
	if last < 0 {
		return nil
	}
	med := make([]time.Duration, last+1)
	have := make([]bool, last+1)
	for b, w := range bins {
		sort.Slice(w, func(i, j int) bool { return w[i] < w[j] })
		med[b], have[b] = w[len(w)/2], true
	}
	filled := make([]time.Duration, last+1)
	for b := range filled {
		for d := 0; ; d++ {
			if b-d >= 0 && have[b-d] {
				filled[b] = med[b-d]
				break
			}
			if b+d <= last && have[b+d] {
				filled[b] = med[b+d]
				break
			}
		}
	}
	return func(at time.Duration) time.Duration {
		b := int(at / step)
		return filled[min(max(b, 0), last)]
	}
}

// SimulatePlan runs every function of the plan under pol with m, rows
// named label; wallClock picks the plan's wall-clock requests (the
// cluster's run), else its trace-time ones (`thaw replay --simulate`).
func SimulatePlan(p *Plan, label string, pol sim.Policy, m sim.Model, wallClock bool) ([]report.Row, error) {
	rows := make([]report.Row, 0, len(p.Functions))
	for i, f := range p.Functions {
		w := p.TraceWorkload(i)
		if wallClock {
			w = p.WallWorkload(i)
		}
		r, err := sim.Run(w, pol, m)
		if err != nil {
			return nil, fmt.Errorf("%s under %s: %w", f.Name, label, err)
		}
		rows = append(rows, report.Row{Policy: label, App: f.App, Function: f.Name, MemoryMB: f.MemoryMB, Result: r})
	}
	return rows, nil
}

func sum(rows []report.Row) (requests, coldRequests, coldStarts int) {
	for _, r := range rows {
		requests += r.Requests
		coldRequests += r.ColdRequests
		coldStarts += r.ColdStarts + r.PreWarms
	}
	return
}

// CompareOptions set how Compare simulates the cluster's runs.
type CompareOptions struct {
	// Cold is the cold-start time of the simulations of a side that
	// measured none, TraceCold the trace-time simulation's.
	Cold, TraceCold time.Duration
	// FastPath sets sim.Model.ProxyFastPath for the simulations of the
	// cluster's run: its ksvcs (containerConcurrency 0, default target
	// burst capacity) keep the activator in the path, so upstream's KPA
	// scales them to zero without waiting for the grace period.
	FastPath bool
	// CurveStep, when positive, gives the simulation of each side the
	// cold-start time the side measured at each moment of its run
	// (ColdStartCurve with this step) instead of its median.
	CurveStep time.Duration
}

// Compare simulates every run of the cluster and sets them side by side.
// lab are the cluster's rows (Rows), outs its requests. It returns the
// comparisons and the simulations' rows ("sim:<side>/<policy>" on the wall
// clock, "trace/<policy>").
func Compare(p *Plan, sides []string, pols []LabPolicy, outs []Outcome, lab []report.Row, o CompareOptions) ([]Comparison, []report.Row, error) {
	var cmp []Comparison
	var simRows []report.Row
	traced := map[string][]report.Row{}
	for _, side := range sides {
		var sideOuts []Outcome
		for i := range outs {
			if outs[i].Side == side {
				sideOuts = append(sideOuts, outs[i])
			}
		}
		cs, ok := ColdStartTime(sideOuts)
		if !ok {
			cs = o.Cold
		}
		var curve func(time.Duration) time.Duration
		if o.CurveStep > 0 {
			curve = ColdStartCurve(p, sideOuts, o.CurveStep)
		}
		for _, lp := range pols {
			k := runKey{side, lp.Name}
			c := Comparison{Side: side, Policy: lp.Name, Settings: lp.String(), Functions: len(p.Functions), ColdStart: cs}
			found := false
			for _, r := range lab {
				if r.Policy == k.label() {
					found = true
					c.Requests += r.Requests
					c.LabColdRequests += r.ColdRequests
					c.LabColdStarts += r.ColdStarts
				}
			}
			if !found {
				continue // not run on this side
			}
			for i := range sideOuts {
				if sideOuts[i].Policy == lp.Name && !sideOuts[i].OK() {
					c.Failed++
				}
			}
			rows, err := SimulatePlan(p, "sim:"+k.label(), lp.Wall(), sim.Model{ColdStart: cs, ColdStartAt: curve, Config: lp.Config(), ProxyFastPath: o.FastPath}, true)
			if err != nil {
				return nil, nil, err
			}
			simRows = append(simRows, rows...)
			_, c.SimColdRequests, c.SimColdStarts = sum(rows)
			tr, seen := traced[lp.Name]
			if !seen {
				tr, err = SimulatePlan(p, "trace/"+lp.Name, lp.Trace, sim.Model{ColdStart: o.TraceCold}, false)
				if err != nil {
					return nil, nil, err
				}
				traced[lp.Name] = tr
				simRows = append(simRows, tr...)
			}
			_, c.TraceColdRequests, c.TraceColdStarts = sum(tr)
			c.StartsDiff, c.RequestsDiff = diff(c.LabColdStarts, c.SimColdStarts), diff(c.LabColdRequests, c.SimColdRequests)
			c.OK = math.Abs(c.StartsDiff) <= Tolerance && c.Failed == 0
			cmp = append(cmp, c)
		}
	}
	return cmp, simRows, nil
}

func pct(f float64) string {
	if math.IsInf(f, 0) {
		return "inf"
	}
	return fmt.Sprintf("%+.1f%%", 100*f)
}

// WriteComparisonTable prints the comparisons as an aligned table.
func WriteComparisonTable(w io.Writer, cmp []Comparison) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "side\tpolicy\trequests\tfailed\tlab cold starts\tsim cold starts\tdiff\tlab cold req\tsim cold req\tdiff\tsim cold start\ttrace-time sim cold starts\ttrace-time cold req\twithin 10%, 0 failed\t")
	for _, c := range cmp {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%v\t%d\t%d\t%v\t\n", c.Side, c.Policy, c.Requests, c.Failed,
			c.LabColdStarts, c.SimColdStarts, pct(c.StartsDiff), c.LabColdRequests, c.SimColdRequests, pct(c.RequestsDiff),
			c.ColdStart.Round(time.Millisecond), c.TraceColdStarts, c.TraceColdRequests, c.OK)
	}
	return tw.Flush()
}

// WriteComparisonCSV writes one line per comparison.
func WriteComparisonCSV(w io.Writer, cmp []Comparison) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"side", "policy", "settings", "functions", "requests", "failed", "lab_cold_starts", "sim_cold_starts",
		"cold_starts_diff", "lab_cold_requests", "sim_cold_requests", "cold_requests_diff", "sim_cold_start_s",
		"trace_sim_cold_starts", "trace_sim_cold_requests", "ok"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	for _, c := range cmp {
		cw.Write([]string{c.Side, c.Policy, c.Settings, strconv.Itoa(c.Functions), strconv.Itoa(c.Requests), strconv.Itoa(c.Failed),
			strconv.Itoa(c.LabColdStarts), strconv.Itoa(c.SimColdStarts), f(c.StartsDiff), strconv.Itoa(c.LabColdRequests),
			strconv.Itoa(c.SimColdRequests), f(c.RequestsDiff), f(c.ColdStart.Seconds()), strconv.Itoa(c.TraceColdStarts),
			strconv.Itoa(c.TraceColdRequests), strconv.FormatBool(c.OK)})
	}
	cw.Flush()
	return cw.Error()
}
