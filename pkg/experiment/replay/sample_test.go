package replay

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

// sampleDir is the shared Azure Functions 2019 sample: THAW_TRACE_SAMPLE, or
// the copy of shared/ beside the checkout. A missing sample fails the test,
// so that CI cannot pass without it; the tests on inline data run apart.
func sampleDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("THAW_TRACE_SAMPLE")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "traces", "azure-functions-2019-sample-100")
	}
	if _, err := os.Stat(filepath.Join(dir, "inv.csv")); err != nil {
		t.Fatalf("the shared trace sample is missing (%v): put shared/traces beside the checkout or set THAW_TRACE_SAMPLE", err)
	}
	return dir
}

// TestSampleTargets replays the whole day of the sample and checks the
// issue's targets for the learned policy: its 75th percentile of
// per-function cold-start % at most half of upstream's default, with idle
// memory at most a fixed 10-minute keep-alive's, and no fixed window better
// on both axes.
func TestSampleTargets(t *testing.T) {
	pols, err := ParsePolicies(DefaultPolicies, keepalive.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Simulate(context.Background(), Options{
		Trace: sampleDir(t), Policies: pols, Model: sim.Model{ColdStart: time.Second},
		Spread: sim.SpreadUniform, Seed: 1, DefaultMemoryMB: 256, DefaultDuration: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Functions != 100 {
		t.Fatalf("%d functions, want 100", res.Functions)
	}
	by := map[string]report.Summary{}
	for _, s := range res.Summaries {
		by[s.Policy] = s
		t.Logf("%-10s cold%% p50 %6.2f p75 %6.2f p95 %6.2f  cold starts %5d  idle %9.0f GB-s", s.Policy,
			s.ColdPctMedian, s.ColdPctP75, s.ColdPctP95, s.ColdStarts, s.IdleMemoryGBs)
	}
	l, up, f10 := by["learned"], by["upstream"], by["fixed-10m"]
	if l.ColdPctP75 > up.ColdPctP75/2 {
		t.Errorf("learned p75 cold %.2f%%, over half of upstream's %.2f%%", l.ColdPctP75, up.ColdPctP75)
	}
	if l.IdleMemoryGBs > f10.IdleMemoryGBs {
		t.Errorf("learned idle memory %.0f GB-s, over fixed-10m's %.0f", l.IdleMemoryGBs, f10.IdleMemoryGBs)
	}
	for _, p := range pols {
		s := by[p.Name]
		if p.Learned == nil && s.ColdPctP75 <= l.ColdPctP75 && s.IdleMemoryGBs <= l.IdleMemoryGBs {
			t.Errorf("%s (p75 %.2f%%, %.0f GB-s) is no worse than learned on both axes", p.Name, s.ColdPctP75, s.IdleMemoryGBs)
		}
	}
}
