package upstream

import (
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustMatch(t *testing.T, re, s string) bool {
	t.Helper()
	return regexp.MustCompile(re).MatchString(s)
}

type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestCollector(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []Result
	}{
		{
			name: "parallel tests, subtests and split writes",
			chunks: []string{
				"=== RUN   TestAutoscaleUpDownUp\n=== PAUSE TestAutoscaleUpDownUp\n=== RUN   TestFastScaleToZero\n",
				"=== CONT  TestAutoscaleUpDownUp\n=== RUN   TestAutoscaleUpDownUp/sub\n    --- PASS: TestAutoscaleUpDownUp/sub (1.00s)\n--- PA",
				"SS: TestAutoscaleUpDownUp (93.25s)\n--- FAIL: TestFastScaleToZero (40.10s)\n",
				"=== RUN   TestParallelParent\n--- PASS: TestParallelParent (0.00s)\n    --- PASS: TestParallelParent/a (44.35s)\n",
				"    --- PASS: TestParallelParent/b (40.28s)\nFAIL\n",
			},
			want: []Result{
				{"TestAutoscaleUpDownUp", "PASS", 93250 * time.Millisecond},
				{"TestFastScaleToZero", "FAIL", 40100 * time.Millisecond},
				{"TestParallelParent", "PASS", 44350 * time.Millisecond},
			},
		},
		{
			name:   "a test that never reports",
			chunks: []string{"=== RUN   TestAutoscalerHA\n    autoscaler_test.go:80: Got initial leader set\npanic: test timed out after 20m0s"},
			want:   []Result{{"TestAutoscalerHA", NoResult, 0}},
		},
		{
			name:   "skip, crlf and a last line without newline",
			chunks: []string{"=== RUN   TestA\r\n--- SKIP: TestA (0.00s)\r\n=== RUN   TestB\n--- PASS: TestB (2.50s)"},
			want:   []Result{{"TestA", "SKIP", 0}, {"TestB", "PASS", 2500 * time.Millisecond}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			c := &Collector{Out: &out}
			for _, ch := range tt.chunks {
				if n, err := c.Write([]byte(ch)); err != nil || n != len(ch) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := c.Results(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Results = %+v, want %+v", got, tt.want)
			}
			if out.String() != strings.Join(tt.chunks, "") {
				t.Errorf("passed through %q", out.String())
			}
		})
	}
}

func TestSummaryAndDiverging(t *testing.T) {
	rows := []Row{
		{SideUpstream, "2x1", "ha", Result{"TestAutoscalerHA", "PASS", 41 * time.Second}},
		{SideThaw, "2x1", "ha", Result{"TestAutoscalerHA", "FAIL", 90 * time.Second}},
		{SideUpstream, "2x1", "ha", Result{"TestActivatorHAGraceful", "FAIL", 10 * time.Second}},
		{SideThaw, "2x1", "ha", Result{"TestActivatorHAGraceful", "FAIL", 10 * time.Second}},
		{SideThaw, "3x10", "ha", Result{"TestAutoscalerHA", "FAIL", time.Second}},
	}
	d := Diverging(rows)
	if len(d) != 1 || d[0].Test != "TestAutoscalerHA" || d[0].Shape != "2x1" {
		t.Errorf("Diverging = %+v, want the 2x1 TestAutoscalerHA only", d)
	}
	s := Summary(rows, 5*time.Minute)
	for _, want := range []string{"| upstream | 2x1 | ha | TestAutoscalerHA | PASS | 41s |", "| thaw | 3x10 | ha | TestAutoscalerHA | FAIL | 1s |",
		"1 passed, 4 not passed; wall time 5m0s"} {
		if !strings.Contains(s, want) {
			t.Errorf("Summary lacks %q:\n%s", want, s)
		}
	}
	if strings.Index(s, "| thaw |") < strings.LastIndex(s, "| upstream |") {
		t.Errorf("upstream rows must come first:\n%s", s)
	}
}
