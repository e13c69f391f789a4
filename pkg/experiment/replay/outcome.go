package replay

import (
	"encoding/csv"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

// How a request was classed cold or warm.
const (
	// ByHeader: Thaw's activator said so (a timeline for a cold request,
	// "warm" for a warm one).
	ByHeader = "header"
	// ByPods: no header (upstream's activator, or no activator in the
	// path); cold when its revision had no ready pod on the client's clock
	// when it was sent.
	ByPods = "pods"
)

// Outcome is one request of a replay on a cluster.
type Outcome struct {
	Side, Policy string
	// Fn indexes the plan's functions; Arrival the plan's arrivals.
	Fn, Arrival int
	Service     string
	// Sent is when it left; Late how far behind its time.
	Sent    time.Time
	Late    time.Duration
	Sleep   time.Duration
	Latency time.Duration
	Status  int
	Error   string
	// Header is Thaw's cold-start header: "cold", "warm" or "" (absent).
	Header string
	// ReadyPods and Replicas are the revision's ready pods and its
	// Deployment's replicas when it was sent, on the client's watch.
	ReadyPods int
	Replicas  int32
	Cold      bool
	ColdBy    string
}

// OK is a 200 answer read to the end.
func (o *Outcome) OK() bool { return o.Error == "" && o.Status == 200 }

// classify sets Cold and ColdBy: the header where present, else the pods.
func (o *Outcome) classify() {
	switch o.Header {
	case "cold":
		o.Cold, o.ColdBy = true, ByHeader
	case "warm":
		o.Cold, o.ColdBy = false, ByHeader
	default:
		o.Cold, o.ColdBy = o.ReadyPods == 0, ByPods
	}
}

// Waited is how much longer than its execution time the request took: the
// cold start's share for a cold request.
func (o *Outcome) Waited() time.Duration { return max(o.Latency-o.Sleep, 0) }

// runKey names one policy on one side.
type runKey struct{ side, policy string }

// label is a run's name in the report: "<side>/<policy>".
func (k runKey) label() string { return k.side + "/" + k.policy }

// PodStats is what the watch saw of one function's revision during a run.
type PodStats struct {
	// ScaleUps from zero; PodSeconds of ready pods.
	ScaleUps   int
	PodSeconds float64
}

// Rows aggregates outcomes into one report row per function of each run,
// named "<side>/<policy>". pods gives the watch's figures per run and
// function. Idle pod-seconds are the pods' ready time minus the time at
// least one request of the function was in flight.
func Rows(p *Plan, outs []Outcome, pods map[runKey][]PodStats) []report.Row {
	type acc struct {
		res       sim.Result
		intervals [][2]time.Time
	}
	byRun := map[runKey][]acc{}
	var keys []runKey
	for k := range pods {
		keys = append(keys, k)
		byRun[k] = make([]acc, len(p.Functions))
	}
	for i := range outs {
		o := &outs[i]
		k := runKey{o.Side, o.Policy}
		if _, ok := byRun[k]; !ok {
			keys = append(keys, k)
			byRun[k] = make([]acc, len(p.Functions))
		}
		a := &byRun[k][o.Fn]
		a.res.Requests++
		if o.Cold {
			a.res.ColdRequests++
			w := o.Waited()
			a.res.AddedLatency += w
			a.res.MaxAddedLatency = max(a.res.MaxAddedLatency, w)
		}
		if !o.Sent.IsZero() && o.Latency > 0 {
			a.intervals = append(a.intervals, [2]time.Time{o.Sent, o.Sent.Add(o.Latency)})
		}
	}
	sort.Slice(keys, func(a, b int) bool {
		if keys[a].side != keys[b].side {
			return keys[a].side < keys[b].side
		}
		return keys[a].policy < keys[b].policy
	})
	var rows []report.Row
	for _, k := range keys {
		for i, a := range byRun[k] {
			if ps := pods[k]; i < len(ps) {
				a.res.ColdStarts = ps[i].ScaleUps
				a.res.PodSeconds = ps[i].PodSeconds
				a.res.IdlePodSeconds = max(ps[i].PodSeconds-busy(a.intervals).Seconds(), 0)
			}
			f := p.Functions[i]
			rows = append(rows, report.Row{Policy: k.label(), App: f.App, Function: f.Name, MemoryMB: f.MemoryMB, Result: a.res})
		}
	}
	return rows
}

// busy is the length of the union of the intervals.
func busy(iv [][2]time.Time) time.Duration {
	sort.Slice(iv, func(a, b int) bool { return iv[a][0].Before(iv[b][0]) })
	var total time.Duration
	var end time.Time
	for _, x := range iv {
		switch {
		case end.IsZero() || !x[0].Before(end):
			total += x[1].Sub(x[0])
			end = x[1]
		case x[1].After(end):
			total += x[1].Sub(end)
			end = x[1]
		}
	}
	return total
}

// WriteOutcomesCSV writes one line per request.
func WriteOutcomesCSV(w io.Writer, p *Plan, outs []Outcome) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"side", "policy", "function", "service", "arrival", "sent_unix_ns", "late_ms", "sleep_ms", "latency_ms",
		"waited_ms", "status", "error", "header", "ready_pods", "replicas", "cold", "cold_by"})
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
	}
	for i := range outs {
		o := &outs[i]
		sent := ""
		if !o.Sent.IsZero() {
			sent = strconv.FormatInt(o.Sent.UnixNano(), 10)
		}
		cw.Write([]string{o.Side, o.Policy, p.Functions[o.Fn].Name, o.Service, strconv.Itoa(o.Arrival), sent, ms(o.Late),
			ms(o.Sleep), ms(o.Latency), ms(o.Waited()), strconv.Itoa(o.Status), o.Error, o.Header,
			strconv.Itoa(o.ReadyPods), strconv.Itoa(int(o.Replicas)), strconv.FormatBool(o.Cold), o.ColdBy})
	}
	cw.Flush()
	return cw.Error()
}
