package collector

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// A replica seeded from another's snapshot reads the same stable and panic averages; seconds it
// already has live data for are not counted twice; a revision whose collection comes later gets its
// seconds when it is created.
func TestSnapshotSeed(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	clk := clocktesting.NewFakeClock(base)
	cfg := Config{StableWindow: 60 * time.Second, PanicWindow: 6 * time.Second}
	a, b := New(Options{Clock: clk}), New(Options{Clock: clk})
	defer a.Close()
	defer b.Close()
	k1 := types.NamespacedName{Namespace: "ns", Name: "one"}
	k2 := types.NamespacedName{Namespace: "ns", Name: "two"}
	for _, k := range []types.NamespacedName{k1, k2} {
		if err := a.CreateOrUpdate(k, cfg); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.CreateOrUpdate(k1, cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		at := base.Add(time.Duration(i) * time.Second)
		s := wire.Stat{AverageConcurrentRequests: float64(10 + i), AverageProxiedConcurrentRequests: 1, RequestCount: float64(i)}
		a.Record(k1, at, s)
		a.Record(k2, at, s)
		if i >= 35 {
			b.Record(k1, at, s) // b joined the peer link at second 35
		}
	}
	now := base.Add(40 * time.Second)
	clk.SetTime(now)
	if n := b.Seed(a.Snapshot()); n != 1 {
		t.Fatalf("seeded %d collections, want 1 (k2 waits for its collection)", n)
	}
	if err := b.CreateOrUpdate(k2, cfg); err != nil {
		t.Fatal(err)
	}
	for _, k := range []types.NamespacedName{k1, k2} {
		as, ap, aerr := a.StableAndPanicConcurrency(k, now)
		bs, bp, berr := b.StableAndPanicConcurrency(k, now)
		if aerr != nil || berr != nil || as != bs || ap != bp {
			t.Errorf("%s concurrency: a %v/%v (%v), b %v/%v (%v)", k, as, ap, aerr, bs, bp, berr)
		}
		as, ap, _ = a.StableAndPanicRPS(k, now)
		bs, bp, _ = b.StableAndPanicRPS(k, now)
		if as != bs || ap != bp {
			t.Errorf("%s rps: a %v/%v, b %v/%v", k, as, ap, bs, bp)
		}
	}
	// Without the seed, b's view of k1 covers only its own five seconds: different from a's.
	c := New(Options{Clock: clk})
	defer c.Close()
	if err := c.CreateOrUpdate(k1, cfg); err != nil {
		t.Fatal(err)
	}
	for i := 35; i < 40; i++ {
		c.Record(k1, base.Add(time.Duration(i)*time.Second), wire.Stat{AverageConcurrentRequests: float64(10 + i), AverageProxiedConcurrentRequests: 1})
	}
	as, _, _ := a.StableAndPanicConcurrency(k1, now)
	cs, _, _ := c.StableAndPanicConcurrency(k1, now)
	if as == cs {
		t.Fatalf("the unseeded control reads the same stable average %v: the test proves nothing", as)
	}
}
