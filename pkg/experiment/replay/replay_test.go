package replay

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/report"
	"github.com/thaw-dev/thaw/pkg/experiment/replay/sim"
)

func TestParsePolicies(t *testing.T) {
	ps, err := ParsePolicies(DefaultPolicies, keepalive.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, ","); got != DefaultPolicies {
		t.Errorf("names %s, want %s", got, DefaultPolicies)
	}
	if ps[0].Grace != 30*time.Second || ps[0].Retention != 0 || ps[3].Retention != 10*time.Minute {
		t.Errorf("upstream %+v, fixed-10m %+v", ps[0], ps[3])
	}
	if ps[5].Learned == nil || ps[5].Learned.ColdStartShare != 0 || ps[6].Learned.ColdStartShare != keepalive.DefaultColdStartShare {
		t.Errorf("hybrid %+v, learned %+v", ps[5].Learned, ps[6].Learned)
	}
	for _, bad := range []string{"", "fixed-", "fixed-0s", "fixed-x", "upstream,upstream", "fixed-60s,fixed-1m", "lru"} {
		if _, err := ParsePolicies(bad, keepalive.DefaultConfig()); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	bad := keepalive.DefaultConfig()
	bad.Head = 0
	if _, err := ParsePolicies("learned", bad); err == nil {
		t.Error("invalid learned config: no error")
	}
}

func writeTrace(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var inv strings.Builder
	inv.WriteString("HashOwner,HashApp,HashFunction,Trigger")
	for m := 1; m <= 120; m++ {
		inv.WriteString(",")
		inv.WriteString(strconv.Itoa(m))
	}
	inv.WriteString("\n")
	row := func(fn string, every int) {
		inv.WriteString("o,a," + fn + ",http")
		for m := 1; m <= 120; m++ {
			if (m-1)%every == 0 {
				inv.WriteString(",1")
			} else {
				inv.WriteString(",0")
			}
		}
		inv.WriteString("\n")
	}
	row("every10", 10)
	row("every1", 1)
	files := map[string]string{
		"invocations_per_function_md.anon.d01.csv":    inv.String(),
		"function_durations_percentiles.anon.d01.csv": "HashOwner,HashApp,HashFunction,Average\no,a,every10,200\no,a,every1,100\n",
		"app_memory_percentiles.anon.d01.csv":         "HashOwner,HashApp,AverageAllocatedMb\no,a,1024\n",
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSimulate(t *testing.T) {
	pols, err := ParsePolicies("upstream,fixed-10m,learned", keepalive.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Simulate(context.Background(), Options{
		Trace: writeTrace(t), Policies: pols, Model: sim.Model{ColdStart: time.Second},
		Spread: sim.SpreadEquidistant, Seed: 1, DefaultMemoryMB: 256, DefaultDuration: time.Second, Workers: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Functions != 2 || len(res.Rows) != 6 || len(res.Summaries) != 3 {
		t.Fatalf("%d functions, %d rows, %d summaries", res.Functions, len(res.Rows), len(res.Summaries))
	}
	byKey := map[string]report.Row{}
	for _, r := range res.Rows {
		byKey[r.Policy+"/"+r.Function] = r
		if r.MemoryMB != 1024 {
			t.Errorf("%s/%s memory %v, want the app's 1024", r.Policy, r.Function, r.MemoryMB)
		}
	}
	// Every 10 minutes: upstream's pod is gone each time (12 cold), a
	// 10-minute retention keeps it (1 cold).
	if r := byKey["upstream/every10"]; r.Requests != 12 || r.ColdRequests != 12 {
		t.Errorf("upstream/every10 %+v", r.Result)
	}
	if r := byKey["fixed-10m/every10"]; r.ColdRequests != 1 {
		t.Errorf("fixed-10m/every10 %+v", r.Result)
	}
	// Every minute: warm after the first under every policy.
	for _, p := range []string{"upstream", "fixed-10m", "learned"} {
		if r := byKey[p+"/every1"]; r.Requests != 120 || r.ColdRequests != 1 {
			t.Errorf("%s/every1 %+v", p, r.Result)
		}
	}

	out := t.TempDir()
	if err := WriteFiles(out, res, map[string]string{"trace": "test"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range Files {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Simulate(ctx, Options{Trace: writeTrace(t), Policies: pols, Model: sim.Model{ColdStart: time.Second}}); err == nil {
		t.Error("cancelled: no error")
	}
	if _, err := Simulate(context.Background(), Options{Trace: t.TempDir(), Policies: pols, Model: sim.Model{ColdStart: time.Second}}); err == nil {
		t.Error("empty directory: no error")
	}
}
