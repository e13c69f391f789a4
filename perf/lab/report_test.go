package lab

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of 4 is the 2nd", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p95 of 1..100", ms(hundred...), 0.95, 95 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 1, 100 * time.Millisecond},
		{"p0 is the min", ms(3, 9), 0, 3 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Quantile(tc.sorted, tc.q); got != tc.want {
				t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	var samples []Sample
	for i := 1; i <= 98; i++ {
		samples = append(samples, Sample{Latency: time.Duration(i) * time.Millisecond, Code: 200})
	}
	samples = append(samples,
		Sample{Latency: 500 * time.Millisecond, Code: 503, Err: "503 Service Unavailable"},
		Sample{Latency: time.Second, Err: "connection refused"})
	s := Summarize(samples)
	if s.Requests != 100 || s.Errors != 2 {
		t.Errorf("requests %d errors %d, want 100 and 2", s.Requests, s.Errors)
	}
	if s.Max != time.Second || s.P99 != 500*time.Millisecond || s.P50 != 50*time.Millisecond {
		t.Errorf("p50 %v p99 %v max %v", s.P50, s.P99, s.Max)
	}
	if got, want := s.CodesString(), "err:1 200:98 503:1"; got != want {
		t.Errorf("codes %q, want %q", got, want)
	}
	if z := Summarize(nil); z.Requests != 0 || z.Max != 0 || z.CodesString() != "" {
		t.Errorf("empty summary %+v", z)
	}
}

func TestFirstOK(t *testing.T) {
	ms := time.Millisecond
	samples := []Sample{
		{Start: 0, Latency: 900 * ms, Code: 200},
		{Start: 100 * ms, Latency: 500 * ms, Code: 200}, // answered first, at 600 ms
		{Start: 0, Latency: 10 * ms, Code: 503},
	}
	if got, ok := FirstOK(samples); !ok || got != 600*ms {
		t.Errorf("FirstOK = %v, %v; want 600ms", got, ok)
	}
	if _, ok := FirstOK(samples[2:]); ok {
		t.Error("FirstOK found a 200 among errors only")
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		thaw, up float64
		want     string
	}{
		{1, 2, "0.50×"},
		{3, 2, "1.50×"},
		{1, 0, "n/a"},
		{1, -1, "n/a"},
		{-1, 2, "n/a"},
		{0, 2, "0.00×"},
	}
	for _, tc := range tests {
		if got := Ratio(tc.thaw, tc.up); got != tc.want {
			t.Errorf("Ratio(%v, %v) = %q, want %q", tc.thaw, tc.up, got, tc.want)
		}
	}
}

func TestTableMarkdown(t *testing.T) {
	tb := Table{Header: []string{"a", "b"}}
	tb.Add("1", "x|y")
	tb.Add("2")
	want := "| a | b |\n| --- | --- |\n| 1 | x\\|y |\n| 2 |  |\n"
	if got := tb.Markdown(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
