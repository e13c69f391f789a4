package report

import (
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
	"time"
)

// Row is one phase's quantiles for one side at one level.
type Row struct {
	Side  string    `json:"side"`
	Level int       `json:"level"`
	Phase string    `json:"phase"`
	Q     Quantiles `json:"quantiles"`
}

// Sides returns the sides in the order they first appear.
func Sides(samples []Sample) []string {
	var out []string
	for _, s := range samples {
		if !slices.Contains(out, s.Side) {
			out = append(out, s.Side)
		}
	}
	return out
}

// Levels returns the parallelism levels, ascending.
func Levels(samples []Sample) []int {
	var out []int
	for _, s := range samples {
		if !slices.Contains(out, s.Level) {
			out = append(out, s.Level)
		}
	}
	slices.Sort(out)
	return out
}

func filter(samples []Sample, side string, level int) []Sample {
	var out []Sample
	for _, s := range samples {
		if s.Side == side && s.Level == level {
			out = append(out, s)
		}
	}
	return out
}

// Summaries returns a Row per side, level and phase that has at least one value.
func Summaries(samples []Sample) []Row {
	var rows []Row
	for _, lvl := range Levels(samples) {
		for _, side := range Sides(samples) {
			sub := filter(samples, side, lvl)
			for _, p := range Phases {
				if v := p.Values(sub); len(v) > 0 {
					rows = append(rows, Row{Side: side, Level: lvl, Phase: p.Name, Q: Summarize(v)})
				}
			}
		}
	}
	return rows
}

func find(rows []Row, side string, level int, phase string) (Quantiles, bool) {
	for _, r := range rows {
		if r.Side == side && r.Level == level && r.Phase == phase {
			return r.Q, true
		}
	}
	return Quantiles{}, false
}

func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

// Ratio is b/a, or NaN when a is zero.
func Ratio(a, b time.Duration) float64 {
	if a <= 0 {
		return math.NaN()
	}
	return float64(b) / float64(a)
}

func ratio(a, b time.Duration) string {
	r := Ratio(a, b)
	if math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2f", r)
}

// WriteTable prints, per level, the quantiles of every phase per side. With two sides it adds the
// ratio second/first (Thaw/upstream when the first side is upstream's).
func WriteTable(w io.Writer, samples []Sample) error {
	rows := Summaries(samples)
	sides := Sides(samples)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, lvl := range Levels(samples) {
		fmt.Fprintf(tw, "parallel %d\t\t\t\t\t\t\t\t\n", lvl)
		fmt.Fprintf(tw, "phase\tside\tn\tp50\tp90\tp95\tp99\tmax\t\n")
		for _, side := range sides {
			sub := filter(samples, side, lvl)
			failed := 0
			for i := range sub {
				if !sub[i].OK() {
					failed++
				}
			}
			if failed > 0 {
				fmt.Fprintf(tw, "failed\t%s\t%d/%d\t\t\t\t\t\t\n", side, failed, len(sub))
			}
		}
		for _, p := range Phases {
			var qs []Quantiles
			for _, side := range sides {
				q, ok := find(rows, side, lvl, p.Name)
				if !ok {
					continue
				}
				qs = append(qs, q)
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", p.Name, side, q.N,
					ms(q.P50), ms(q.P90), ms(q.P95), ms(q.P99), ms(q.Max))
			}
			if len(sides) == 2 && len(qs) == 2 {
				a, b := qs[0], qs[1]
				fmt.Fprintf(tw, "%s\t%s/%s\t\t%s\t%s\t%s\t%s\t%s\t\n", p.Name, sides[1], sides[0],
					ratio(a.P50, b.P50), ratio(a.P90, b.P90), ratio(a.P95, b.P95), ratio(a.P99, b.P99), ratio(a.Max, b.Max))
			}
		}
		fmt.Fprintf(tw, "\t\t\t\t\t\t\t\t\n")
	}
	return tw.Flush()
}
