package collector

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// A replica SIGKILLed and restarted in place takes a peer's windows before campaigning, while the
// other peers still hold, in their forwarding queues, the stats of its outage, and flush them once it
// accepts them again. Those stats are already in the peer's snapshot: recorded again on top of the
// seeded seconds they would count the outage twice, and the new holder of the revision's bucket would
// decide from an inflated stable window (the steady revision of the autoscaler-kill chaos scenario:
// 1.05 concurrent requests read as more than 1.4, one pod too many). Whatever the order in which the
// seed, the peers' backlog and the first live stats arrive, the restarted replica must read what
// the peer reads.
func TestSeedThenPeersBacklog(t *testing.T) {
	const (
		window  = 60
		killAt  = 30 // the replica dies after its stats of second killAt-1
		startAt = 45 // and takes the peer's windows at second startAt
	)
	key := types.NamespacedName{Namespace: "ns", Name: "steady"}
	cfg := Config{StableWindow: window * time.Second, PanicWindow: 6 * time.Second}
	base := time.Unix(1_800_000_000, 0)
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	// Three activators, 0.35 concurrent requests each, every second.
	stats := func(c *Collector, sec int) {
		for range 3 {
			c.Record(key, at(sec), wire.Stat{AverageConcurrentRequests: 0.35, RequestCount: 3.5})
		}
	}
	backlog := func(c *Collector) {
		for sec := killAt; sec < startAt; sec++ {
			stats(c, sec)
		}
	}
	steps := map[string]func(peer, restarted *Collector){
		"seed": func(peer, r *Collector) { r.Seed(peer.Snapshot()) },
		"create": func(_, r *Collector) {
			if err := r.CreateOrUpdate(key, cfg); err != nil {
				t.Fatal(err)
			}
		},
		"backlog": func(_, r *Collector) { backlog(r) },
		"live":    func(_, r *Collector) { stats(r, startAt) },
	}
	for _, order := range [][]string{
		{"create", "seed", "backlog", "live"},
		{"create", "seed", "live", "backlog"},
		{"create", "live", "seed", "backlog"},
		{"seed", "create", "backlog", "live"},
		{"seed", "create", "live", "backlog"},
		// Controls that hold already: the backlog before the seed marks those seconds live.
		{"create", "backlog", "seed", "live"},
		{"create", "backlog", "live", "seed"},
	} {
		name := ""
		for _, s := range order {
			name += "/" + s
		}
		t.Run(name[1:], func(t *testing.T) {
			clk := clocktesting.NewFakeClock(at(0))
			peer := New(Options{Clock: clk})
			defer peer.Close()
			if err := peer.CreateOrUpdate(key, cfg); err != nil {
				t.Fatal(err)
			}
			for sec := range startAt {
				clk.SetTime(at(sec))
				stats(peer, sec)
			}
			clk.SetTime(at(startAt))
			stats(peer, startAt)
			restarted := New(Options{Clock: clk})
			defer restarted.Close()
			for _, s := range order {
				steps[s](peer, restarted)
			}
			same := func(now time.Time) {
				t.Helper()
				ps, pp, perr := peer.StableAndPanicConcurrency(key, now)
				rs, rp, rerr := restarted.StableAndPanicConcurrency(key, now)
				if perr != nil || rerr != nil {
					t.Fatalf("errors: peer %v, restarted %v", perr, rerr)
				}
				if rs != ps || rp != pp {
					t.Errorf("at %s the restarted replica reads stable/panic %v/%v, the peer %v/%v", now.Sub(base), rs, rp, ps, pp)
				}
			}
			same(at(startAt))
			// The next seconds are live on both, and counted on both.
			for sec := startAt + 1; sec < startAt+3; sec++ {
				clk.SetTime(at(sec))
				stats(peer, sec)
				stats(restarted, sec)
				same(at(sec))
			}
		})
	}
}

// A peer whose clock runs ahead gives seconds in this replica's future: they are not taken, so that
// they cannot hold back this replica's own stats of those seconds.
func TestSeedIgnoresFutureSeconds(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "r"}
	cfg := Config{StableWindow: 60 * time.Second, PanicWindow: 6 * time.Second}
	base := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		secs []Second // seeded at base
		want float64  // stable concurrency after one live stat of 1 at base+1s
	}{
		{"all in the future", []Second{{Sec: base.Unix() + 1, Concurrency: 5}}, 1},
		{"past taken, future not", []Second{{Sec: base.Unix(), Concurrency: 3}, {Sec: base.Unix() + 1, Concurrency: 5}}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(base)
			c := New(Options{Clock: clk})
			defer c.Close()
			if err := c.CreateOrUpdate(key, cfg); err != nil {
				t.Fatal(err)
			}
			c.Seed([]RevisionSnapshot{{Namespace: key.Namespace, Name: key.Name, Seconds: tc.secs}})
			now := base.Add(time.Second)
			clk.SetTime(now)
			c.Record(key, now, wire.Stat{AverageConcurrentRequests: 1})
			if got, _, err := c.StableAndPanicConcurrency(key, now); err != nil || got != tc.want {
				t.Errorf("stable = %v, %v; want %v", got, err, tc.want)
			}
			if d := c.Drops(); d.Seeded != 0 {
				t.Errorf("dropped %d live stats as seeded", d.Seeded)
			}
		})
	}
}
