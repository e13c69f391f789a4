// Package report turns replay results into per-policy summaries, a table,
// CSV and JSON files and the Pareto plot of cold starts against idle memory.
package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

// Row is one function under one policy.
type Row struct {
	Policy   string  `json:"policy"`
	App      string  `json:"app"`
	Function string  `json:"function"`
	MemoryMB float64 `json:"memoryMB"`
	sim.Result
}

// IdleMemoryMBs is the row's idle pod-seconds times the function's memory.
func (r Row) IdleMemoryMBs() float64 { return r.IdlePodSeconds * r.MemoryMB }

// Summary is one policy over every function.
type Summary struct {
	Policy string `json:"policy"`
	// Functions counts the functions with at least one request; the
	// cold-start percentages are over them.
	Functions    int `json:"functions"`
	Requests     int `json:"requests"`
	ColdRequests int `json:"coldRequests"`
	ColdStarts   int `json:"coldStarts"`
	PreWarms     int `json:"preWarms"`
	// ColdPct* are percentiles over functions of the per-function
	// percentage of cold requests.
	ColdPctMedian float64 `json:"coldPctMedian"`
	ColdPctP75    float64 `json:"coldPctP75"`
	ColdPctP95    float64 `json:"coldPctP95"`
	// IdlePodSeconds and IdleMemoryGBs sum over functions; the memory is
	// MB × s / 1024.
	IdlePodSeconds float64 `json:"idlePodSeconds"`
	IdleMemoryGBs  float64 `json:"idleMemoryGBs"`
	// AddedLatencySeconds is the total waiting of cold requests;
	// AddedLatencyPerRequestMs the same per request.
	AddedLatencySeconds      float64 `json:"addedLatencySeconds"`
	AddedLatencyPerRequestMs float64 `json:"addedLatencyPerRequestMs"`
	MaxAddedLatencySeconds   float64 `json:"maxAddedLatencySeconds"`
}

// Summarise makes one Summary per policy, in the order of policies.
func Summarise(rows []Row, policies []string) []Summary {
	out := make([]Summary, 0, len(policies))
	for _, p := range policies {
		s := Summary{Policy: p}
		var pct []float64
		var added time.Duration
		for _, r := range rows {
			if r.Policy != p {
				continue
			}
			s.Requests += r.Requests
			s.ColdRequests += r.ColdRequests
			s.ColdStarts += r.ColdStarts
			s.PreWarms += r.PreWarms
			s.IdlePodSeconds += r.IdlePodSeconds
			s.IdleMemoryGBs += r.IdleMemoryMBs() / 1024
			added += r.AddedLatency
			s.MaxAddedLatencySeconds = max(s.MaxAddedLatencySeconds, r.MaxAddedLatency.Seconds())
			if r.Requests > 0 {
				s.Functions++
				pct = append(pct, r.ColdPercent())
			}
		}
		sort.Float64s(pct)
		s.ColdPctMedian, s.ColdPctP75, s.ColdPctP95 = Quantile(pct, 0.5), Quantile(pct, 0.75), Quantile(pct, 0.95)
		s.AddedLatencySeconds = added.Seconds()
		if s.Requests > 0 {
			s.AddedLatencyPerRequestMs = float64(added.Milliseconds()) / float64(s.Requests)
		}
		out = append(out, s)
	}
	return out
}

// Quantile is the q-quantile of sorted values, interpolating linearly
// between the closest ranks; NaN for none.
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// WriteTable prints the summaries as an aligned table.
func WriteTable(w io.Writer, sums []Summary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tcold% p50\tcold% p75\tcold% p95\tcold starts\tcold requests\tpre-warms\tidle pod-s\tidle GB-s\tadded s\tadded ms/req\t")
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.2f\t\n", s.Policy,
			s.ColdPctMedian, s.ColdPctP75, s.ColdPctP95, s.ColdStarts, s.ColdRequests, s.PreWarms,
			s.IdlePodSeconds, s.IdleMemoryGBs, s.AddedLatencySeconds, s.AddedLatencyPerRequestMs)
	}
	return tw.Flush()
}

// WriteRowsCSV writes one line per function and policy.
func WriteRowsCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"policy", "app", "function", "memory_mb", "requests", "cold_requests", "cold_pct", "cold_starts",
		"prewarms", "added_latency_s", "max_added_latency_s", "pod_s", "idle_pod_s", "idle_memory_mb_s", "final_mode"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, r := range rows {
		cw.Write([]string{r.Policy, r.App, r.Function, f(r.MemoryMB), strconv.Itoa(r.Requests), strconv.Itoa(r.ColdRequests),
			f(r.ColdPercent()), strconv.Itoa(r.ColdStarts), strconv.Itoa(r.PreWarms), f(r.AddedLatency.Seconds()),
			f(r.MaxAddedLatency.Seconds()), f(r.PodSeconds), f(r.IdlePodSeconds), f(r.IdleMemoryMBs()), r.FinalMode})
	}
	cw.Flush()
	return cw.Error()
}

// WriteSummaryCSV writes one line per policy.
func WriteSummaryCSV(w io.Writer, sums []Summary) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"policy", "functions", "requests", "cold_requests", "cold_starts", "prewarms", "cold_pct_p50",
		"cold_pct_p75", "cold_pct_p95", "idle_pod_s", "idle_memory_gb_s", "added_latency_s", "added_latency_ms_per_request",
		"max_added_latency_s"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	for _, s := range sums {
		cw.Write([]string{s.Policy, strconv.Itoa(s.Functions), strconv.Itoa(s.Requests), strconv.Itoa(s.ColdRequests),
			strconv.Itoa(s.ColdStarts), strconv.Itoa(s.PreWarms), f(s.ColdPctMedian), f(s.ColdPctP75), f(s.ColdPctP95),
			f(s.IdlePodSeconds), f(s.IdleMemoryGBs), f(s.AddedLatencySeconds), f(s.AddedLatencyPerRequestMs),
			f(s.MaxAddedLatencySeconds)})
	}
	cw.Flush()
	return cw.Error()
}

// Document is the JSON file: what was run, the summaries and every row.
type Document struct {
	Run       any       `json:"run"`
	Summaries []Summary `json:"summaries"`
	Rows      []Row     `json:"rows"`
}

// WriteJSON writes doc, indented.
func WriteJSON(w io.Writer, doc Document) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
