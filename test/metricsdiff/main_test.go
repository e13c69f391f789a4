package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	up, thaw := t.TempDir(), t.TempDir()
	pages := map[string][2]string{
		"activator": {
			"# TYPE a counter\na_total{x=\"1\"} 1\n# TYPE b gauge\nb{y=\"1\"} 1\nb 2\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
			"# TYPE a counter\na_total{x=\"2\"} 5\n# TYPE b gauge\nb{z=\"1\"} 1\n# TYPE c gauge\nc 1\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		},
		"autoscaler": {"# TYPE d gauge\nd 1\n# TYPE q gauge\nq{name=\"kpa\"} 1\n", "# TYPE d counter\nd 1\n# TYPE q gauge\nq{name=\"k\"} 1\n"},
	}
	for c, p := range pages {
		for i, dir := range []string{up, thaw} {
			if err := os.WriteFile(filepath.Join(dir, c+".prom"), []byte(p[i]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out bytes.Buffer
	if err := run([]string{"diff", up, thaw}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## activator\n\n2 families alike, 0 only upstream's, 1 only Thaw's, 1 differ.",
		"- `c gauge {}`",
		"- `b: upstream gauge {y} {}; Thaw gauge {z}`",
		"## autoscaler\n\n0 families alike, 0 only upstream's, 0 only Thaw's, 2 differ.",
		"- `q: upstream values name=kpa; Thaw name=k`",
		"- `d: upstream gauge {}; Thaw counter {}`",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if err := run([]string{"diff", up}, &out); err == nil {
		t.Error("diff with one directory was accepted")
	}
}
