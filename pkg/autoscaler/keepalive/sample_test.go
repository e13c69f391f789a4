package keepalive_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/experiment/replay"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

// TestClusterPolicyOnSample replays the shared Azure Functions sample with
// the policies as the autoscaler runs them: pauses under StatQuiet are not
// idle times (the autoscaler sees traffic by the second). Thaw's policy must
// still meet the targets: 75th-percentile cold-start % at most half
// of upstream's default, idle memory at most a fixed 10-minute
// keep-alive's. A missing sample fails the test, as the replay's do.
func TestClusterPolicyOnSample(t *testing.T) {
	dir := os.Getenv("THAW_TRACE_SAMPLE")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "traces", "azure-functions-2019-sample-100")
	}
	if _, err := os.Stat(filepath.Join(dir, "inv.csv")); err != nil {
		t.Fatalf("the shared trace sample is missing (%v): put shared/traces beside the checkout or set THAW_TRACE_SAMPLE", err)
	}
	learned, hybrid := keepalive.DefaultConfig(), keepalive.PaperConfig()
	learned.MinIdle, hybrid.MinIdle = keepalive.StatQuiet, keepalive.StatQuiet
	pols := []sim.Policy{sim.Upstream(), sim.Fixed(10 * time.Minute), sim.Learned("learned", learned), sim.Learned("hybrid", hybrid)}
	res, err := replay.Simulate(context.Background(), replay.Options{Trace: dir, Policies: pols,
		Model: sim.Model{ColdStart: time.Second}, Spread: sim.SpreadUniform, Seed: 1, DefaultMemoryMB: 256,
		DefaultDuration: time.Second})
	if err != nil {
		t.Fatal(err)
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
}
