package pacer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// node simulates a node that starts pods at a fixed rate shared by every pod
// starting (processor sharing: n pods starting at once each take n/rate),
// after a fixed delay (the controllers creating the pod) and before another
// one that does not load the node (kubelet's sync, the readiness probe).
type node struct {
	rate          float64       // pods a second
	create, after time.Duration // before and after the shared part
}

type simPod struct {
	key              Key
	appears, sharedT time.Time // when it exists; when its shared work ended
	work             float64   // remaining, in pods
	started, ready   bool
}

// burstResult is one burst's wake → ready latencies, and how many wake-ups
// waited in the pacer.
type burstResult struct {
	lat   []time.Duration
	paced int
}

// simulate fires n wake-ups at once on nd and returns their wake → first
// pod ready latencies. With p nil nothing is paced. clk carries over
// between bursts, so one Pacer learns across them.
func simulate(t *testing.T, clk *clocktesting.FakeClock, p *Pacer, nd node, n int) burstResult {
	t.Helper()
	const dt = 10 * time.Millisecond
	start := clk.Now()
	var pods []*simPod
	wake := map[Key]time.Time{}
	done := map[Key]time.Duration{}
	var res burstResult
	// Pods differ: each needs between 0.5 and 1.5 of the node's per-pod
	// work, the same sequence paced or not.
	rnd := rand.New(rand.NewPCG(uint64(n), 1))
	works := make([]float64, n)
	for i := range works {
		works[i] = 0.5 + rnd.Float64()
	}
	scale := func(k Key) {
		var i int
		fmt.Sscanf(k.Name, "rev-%d", &i)
		pods = append(pods, &simPod{key: k, appears: clk.Now().Add(nd.create), work: works[i]})
	}
	admitted := func(keys []Key) {
		for _, k := range keys {
			if _, ok := wake[k]; !ok {
				t.Fatalf("admitted %v, which never asked", k)
			}
			a := p.Offer(clk.Now(), k, wake[k], 1)
			if !a.OK || !a.First || a.Paced <= 0 {
				t.Fatalf("released %v answers %+v on its retry", k, a)
			}
			res.paced++
			scale(k)
		}
	}
	for i := range n {
		k := Key{Namespace: "sim", Name: fmt.Sprintf("rev-%03d", i)}
		// Pokes a microsecond apart: the arrival order.
		wake[k] = start.Add(time.Duration(i) * time.Microsecond)
		if p == nil {
			scale(k)
			continue
		}
		if a := p.Offer(start, k, wake[k], 1); a.OK {
			scale(k)
		}
	}
	lastTick := clk.Now()
	for len(done) < n {
		if clk.Since(start) > 10*time.Minute {
			t.Fatalf("%d of %d ready after 10 minutes", len(done), n)
		}
		clk.Step(dt)
		now := clk.Now()
		var sharing []*simPod
		for _, sp := range pods {
			switch {
			case sp.ready:
			case !sp.started && !now.Before(sp.appears):
				sp.started = true
				if p != nil {
					p.Pod(now, sp.key, sp.key.Name, now, PodStarting)
				}
				sharing = append(sharing, sp)
			case sp.started && sp.work > 0:
				sharing = append(sharing, sp)
			}
		}
		for _, sp := range sharing {
			sp.work -= nd.rate * dt.Seconds() / float64(len(sharing))
			if sp.work <= 0 {
				sp.sharedT = now
			}
		}
		for _, sp := range pods {
			if sp.started && !sp.ready && sp.work <= 0 && !now.Before(sp.sharedT.Add(nd.after)) {
				sp.ready = true
				done[sp.key] = now.Sub(wake[sp.key])
				if p != nil {
					admitted(p.Pod(now, sp.key, sp.key.Name, now, PodReady))
				}
			}
		}
		if p != nil && now.Sub(lastTick) >= 500*time.Millisecond {
			lastTick = now
			admitted(p.Tick(now))
		}
	}
	for _, d := range done {
		res.lat = append(res.lat, d)
	}
	slices.Sort(res.lat)
	return res
}

func quantile(s []time.Duration, q float64) time.Duration {
	return s[int(q*float64(len(s)-1)+0.5)]
}

// idle lets a minute pass with nothing starting (the experiment's wait for
// zero between levels).
func idle(clk *clocktesting.FakeClock, p *Pacer) {
	for range 120 {
		clk.Step(500 * time.Millisecond)
		if p != nil {
			p.Tick(clk.Now())
		}
	}
}

// TestSimulatedNode runs the experiment's levels (1, 5, 25, 100 at once,
// with a minute at zero in between) on simulated nodes, paced and unpaced:
// 1, 5 and 25 at once are never delayed, and 100 at once finish in arrival
// order, with a much lower median and no worse p95.
func TestSimulatedNode(t *testing.T) {
	nodes := []struct {
		name string
		nd   node
		// median and p95 bound the paced quantiles of 100 at once, as
		// fractions of the unpaced ones. The first round of a burst is the
		// initial window (30), unpaced, so the more of a start is not
		// shared, the less pacing can gain.
		median, p95 float64
		// burst, when set, is the node for the burst of 100: the same node
		// loaded by other work after the baseline was learned.
		burst *node
	}{
		// The lab: about 3.5 pods a second, nearly all of a start shared.
		{"processor sharing", node{rate: 3.5, create: 200 * time.Millisecond, after: 100 * time.Millisecond}, 0.65, 1.02, nil},
		// Most of the unloaded start not shared (probes, sync periods).
		{"sharing plus a fixed second", node{rate: 3.5, create: 200 * time.Millisecond, after: time.Second}, 0.65, 1.02, nil},
		// A faster node.
		{"10 pods a second", node{rate: 10, create: 200 * time.Millisecond, after: 300 * time.Millisecond}, 0.65, 1.02, nil},
		// The baseline learned while quiet, then every start 2 s slower:
		// the quiet baseline is out of reach, and the window must not
		// collapse (a latency threshold cut it round after round to the
		// minimum here, and the node idled between starts).
		{"slowed by other work", node{rate: 3.5, create: 200 * time.Millisecond, after: 100 * time.Millisecond}, 0.75, 1.15,
			&node{rate: 3.5, create: 200 * time.Millisecond, after: 2 * time.Second}},
		// The lab with other work on its two CPUs (the run that collapsed
		// the window before cuts were bounded by a halving and a floor):
		// the baseline learned quiet, the burst on a node at 1 pod a
		// second with 3 s of every start not shared.
		{"the lab under load", node{rate: 2.5, create: 200 * time.Millisecond, after: 300 * time.Millisecond}, 0.75, 1.05,
			&node{rate: 1, create: 200 * time.Millisecond, after: 3 * time.Second}},
	}
	for _, c := range nodes {
		t.Run(c.name, func(t *testing.T) {
			pclk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			uclk := clocktesting.NewFakeClock(pclk.Now())
			p := New(Options{})
			for _, n := range []int{1, 5, 25, 100} {
				nd := c.nd
				if n == 100 && c.burst != nil {
					nd = *c.burst
				}
				paced := simulate(t, pclk, p, nd, n)
				unpaced := simulate(t, uclk, nil, nd, n)
				pm, p95 := quantile(paced.lat, 0.5), quantile(paced.lat, 0.95)
				um, u95 := quantile(unpaced.lat, 0.5), quantile(unpaced.lat, 0.95)
				t.Logf("%3d at once: paced p50 %5.1fs p95 %5.1fs (%d waited, window now %.1f) | unpaced p50 %5.1fs p95 %5.1fs | ratio %.2f / %.2f",
					n, pm.Seconds(), p95.Seconds(), paced.paced, p.Stats(pclk.Now()).Window, um.Seconds(), u95.Seconds(),
					pm.Seconds()/um.Seconds(), p95.Seconds()/u95.Seconds())
				if n <= 25 {
					if paced.paced != 0 || !slices.Equal(paced.lat, unpaced.lat) {
						t.Errorf("%d at once: %d wake-ups paced, latencies %v, want none and %v", n, paced.paced, paced.lat, unpaced.lat)
					}
				} else {
					if pm.Seconds() > c.median*um.Seconds() {
						t.Errorf("%d at once: paced median %v, want ≤ %.1f × unpaced %v", n, pm, c.median, um)
					}
					if p95.Seconds() > c.p95*u95.Seconds() {
						t.Errorf("%d at once: paced p95 %v, want ≤ %.2f × unpaced %v", n, p95, c.p95, u95)
					}
				}
				idle(pclk, p)
				idle(uclk, nil)
			}
		})
	}
}
