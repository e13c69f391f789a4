package lab

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Sample is one request's outcome: its latency and HTTP status (0 when no response came back).
type Sample struct {
	// Start is when the request was sent, from the start of its run.
	Start   time.Duration
	Latency time.Duration
	Code    int
	// Err is set for a transport error (no response) or a non-2xx/3xx status.
	Err string
}

// Summary is a set of samples reduced to what the report shows.
type Summary struct {
	Requests int
	// Errors counts samples with Err set; Codes counts every status (0 = transport error).
	Errors             int
	Codes              map[int]int
	P50, P95, P99, Max time.Duration
}

// Summarize computes nearest-rank percentiles over every sample, errors included: a request that
// failed slowly is as slow for its client as one that succeeded.
func Summarize(samples []Sample) Summary {
	s := Summary{Requests: len(samples), Codes: map[int]int{}}
	if len(samples) == 0 {
		return s
	}
	lat := make([]time.Duration, len(samples))
	for i, x := range samples {
		lat[i] = x.Latency
		s.Codes[x.Code]++
		if x.Err != "" {
			s.Errors++
		}
	}
	slices.Sort(lat)
	s.P50, s.P95, s.P99 = Quantile(lat, 0.50), Quantile(lat, 0.95), Quantile(lat, 0.99)
	s.Max = lat[len(lat)-1]
	return s
}

// Quantile is the nearest-rank q-quantile of sorted (0 when empty).
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// FirstOK is when the first 200 answer arrived, from the start of the run (false if none did).
func FirstOK(samples []Sample) (time.Duration, bool) {
	first, ok := time.Duration(0), false
	for _, x := range samples {
		if x.Code == 200 && (!ok || x.Start+x.Latency < first) {
			first, ok = x.Start+x.Latency, true
		}
	}
	return first, ok
}

// CodesString lists the status counts in order, e.g. "200:950 503:50" (0 is "err").
func (s Summary) CodesString() string {
	codes := make([]int, 0, len(s.Codes))
	for c := range s.Codes {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts := make([]string, 0, len(codes))
	for _, c := range codes {
		name := fmt.Sprint(c)
		if c == 0 {
			name = "err"
		}
		parts = append(parts, fmt.Sprintf("%s:%d", name, s.Codes[c]))
	}
	return strings.Join(parts, " ")
}

// Ms formats a duration in milliseconds with two decimals.
func Ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// MiB formats a byte count in MiB with one decimal.
func MiB(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// Ratio formats thaw/upstream as "0.52×"; "n/a" when upstream is not positive or thaw is negative
// (differences of quantiles can be, within noise): no meaningful ratio.
func Ratio(thaw, upstream float64) string {
	if upstream <= 0 || thaw < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", thaw/upstream)
}

// Table is a markdown table.
type Table struct {
	Header []string
	Rows   [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Markdown renders the table; short rows are padded with empty cells.
func (t Table) Markdown() string {
	var b strings.Builder
	row := func(cells []string) {
		b.WriteString("|")
		for i := range t.Header {
			c := ""
			if i < len(cells) {
				c = strings.ReplaceAll(cells[i], "|", `\|`)
			}
			b.WriteString(" " + c + " |")
		}
		b.WriteString("\n")
	}
	row(t.Header)
	sep := make([]string, len(t.Header))
	for i := range sep {
		sep[i] = "---"
	}
	row(sep)
	for _, r := range t.Rows {
		row(r)
	}
	return b.String()
}
