package report

import (
	"bytes"
	"encoding/csv"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

func TestQuantile(t *testing.T) {
	for _, tc := range []struct {
		vals []float64
		q    float64
		want float64
	}{
		{[]float64{1}, 0.75, 1},
		{[]float64{0, 10}, 0.5, 5},
		{[]float64{0, 10, 20, 30, 40}, 0.75, 30},
		{[]float64{0, 10, 20, 30}, 0.75, 22.5},
		{[]float64{0, 10, 20, 30}, 1, 30},
	} {
		if got := Quantile(tc.vals, tc.q); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Quantile(%v, %v) = %v, want %v", tc.vals, tc.q, got, tc.want)
		}
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Error("Quantile of nothing is not NaN")
	}
}

func rows() []Row {
	return []Row{
		{Policy: "a", Function: "f1", MemoryMB: 1024, Result: sim.Result{Requests: 10, ColdRequests: 5, ColdStarts: 4,
			AddedLatency: 5 * time.Second, MaxAddedLatency: time.Second, IdlePodSeconds: 100, PodSeconds: 110}},
		{Policy: "a", Function: "f2", MemoryMB: 512, Result: sim.Result{Requests: 4, ColdRequests: 1, ColdStarts: 1,
			AddedLatency: time.Second, MaxAddedLatency: time.Second, IdlePodSeconds: 50, PodSeconds: 51}},
		{Policy: "a", Function: "f3", MemoryMB: 512}, // no requests: no cold-start share
		{Policy: "b", Function: "f1", MemoryMB: 1024, Result: sim.Result{Requests: 10, PreWarms: 3, IdlePodSeconds: 400}},
	}
}

func TestSummarise(t *testing.T) {
	sums := Summarise(rows(), []string{"a", "b"})
	a, b := sums[0], sums[1]
	if a.Functions != 2 || a.Requests != 14 || a.ColdRequests != 6 || a.ColdStarts != 5 {
		t.Errorf("a: %+v", a)
	}
	// Cold shares 50% and 25%: median 37.5, p75 43.75.
	if a.ColdPctMedian != 37.5 || a.ColdPctP75 != 43.75 {
		t.Errorf("a: median %v p75 %v, want 37.5 and 43.75", a.ColdPctMedian, a.ColdPctP75)
	}
	// 100 s × 1 GB + 50 s × 0.5 GB.
	if a.IdlePodSeconds != 150 || a.IdleMemoryGBs != 125 {
		t.Errorf("a: idle %v pod-s %v GB-s, want 150 and 125", a.IdlePodSeconds, a.IdleMemoryGBs)
	}
	if a.AddedLatencySeconds != 6 || math.Abs(a.AddedLatencyPerRequestMs-6000.0/14) > 1e-9 || a.MaxAddedLatencySeconds != 1 {
		t.Errorf("a: added %+v", a)
	}
	if b.Functions != 1 || b.PreWarms != 3 || b.ColdPctP75 != 0 || b.IdleMemoryGBs != 400 {
		t.Errorf("b: %+v", b)
	}
	var tab bytes.Buffer
	if err := WriteTable(&tab, sums); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "43.75") || strings.Count(tab.String(), "\n") != 3 {
		t.Errorf("table:\n%s", tab.String())
	}
}

func TestFiles(t *testing.T) {
	var b bytes.Buffer
	if err := WriteRowsCSV(&b, rows()); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 5 || recs[0][0] != "policy" || recs[1][6] != "50" || recs[1][13] != "102400" {
		t.Errorf("rows CSV %v", recs[:2])
	}
	sums := Summarise(rows(), []string{"a", "b"})
	b.Reset()
	if err := WriteSummaryCSV(&b, sums); err != nil {
		t.Fatal(err)
	}
	if recs, err = csv.NewReader(&b).ReadAll(); err != nil || len(recs) != 3 || recs[1][7] != "43.7500" {
		t.Errorf("summary CSV %v %v", recs, err)
	}
	b.Reset()
	if err := WriteJSON(&b, Document{Run: map[string]string{"trace": "x"}, Summaries: sums, Rows: rows()}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"coldPctP75": 43.75`) {
		t.Errorf("JSON lacks the summary: %.300s", b.String())
	}
	for _, f := range []Format{SVG, PNG} {
		b.Reset()
		if err := WritePareto(&b, sums, f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if b.Len() < 1000 {
			t.Errorf("%s plot is %d bytes", f, b.Len())
		}
	}
	if err := WritePareto(&b, sums, "gif"); err == nil {
		t.Error("no error for an unknown format")
	}
	if err := WritePareto(&b, nil, SVG); err == nil {
		t.Error("no error for nothing to plot")
	}
}
