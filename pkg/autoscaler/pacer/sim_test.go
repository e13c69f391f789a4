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
	// perPod and limit, when set, make the node's rate grow with the
	// pods sharing it, min(limit, rate + perPod×n): a node whose start
	// work runs partly in parallel (image layers, CNI, kubelet workers).
	perPod, limit float64
	// load, when set, is other work sharing the node as that many pods
	// would: starting pods get rate×n/(n+load) of it.
	load float64
}

// rateAt is the node's rate with n pods sharing it.
func (nd node) rateAt(n int) float64 {
	switch {
	case nd.load > 0:
		return nd.rate * float64(n) / (float64(n) + nd.load)
	case nd.perPod > 0:
		return min(nd.limit, nd.rate+nd.perPod*float64(n))
	}
	return nd.rate
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
	// lo, hi and last are the least, the largest and the last window
	// seen while wake-ups waited.
	lo, hi, last float64
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
			sp.work -= nd.rateAt(len(sharing)) * dt.Seconds() / float64(len(sharing))
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
			if st := p.Stats(now); st.Queued > 0 {
				if res.lo == 0 || st.Window < res.lo {
					res.lo = st.Window
				}
				res.hi = max(res.hi, st.Window)
				res.last = st.Window
			}
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

// The nodes the simulation runs, by name.
var (
	// Nearly all of a start shared, about 3.5 pods a second.
	psNode = node{rate: 3.5, create: 200 * time.Millisecond, after: 100 * time.Millisecond}
	// The lab's 100 at once, as issue 16's last run measured it (machine
	// shared with builds, load 8-16): the rate the node delivered rose
	// with the pods starting at once, 1.4 pods a second at 15, 1.9 at 30,
	// 2.2 at about 50, and unpaced 100 at once took 42.6 s p50 and 52.2 s
	// p95. Two nodes fit those figures: one whose rate grows with the
	// pods sharing it (0.9 + n/30 pods a second, at most 2.3), and one
	// whose starts wait 5.6 s on delays that do not load it (probe
	// periods, kubelet loops) besides 2.95 pods a second shared.
	risingNode = node{rate: 0.9, perPod: 1.0 / 30, limit: 2.3, create: 200 * time.Millisecond, after: 300 * time.Millisecond}
	delayNode  = node{rate: 2.95, create: 600 * time.Millisecond, after: 5 * time.Second}
	// A third fit, and the likeliest cause: the node's CPU shared with
	// builds as with 13 more pods, so the more pods start at once the
	// larger their share (2.6×n/(n+13) pods a second). Unpaced, 100 at
	// once take 42.1 s p50 and 47.5 s p95 here, the lab's 42.6 and 52.2.
	loadedNode = node{rate: 2.6, load: 13, create: 200 * time.Millisecond, after: 300 * time.Millisecond}
)

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
		// grows: the burst of 100 grows the window first (else cuts it).
		grows bool
	}{
		// The rate is flat in the pods starting: the burst's first starts
		// read a low speedup, the window is cut, and the cuts are kept.
		{"processor sharing", psNode, 0.65, 1.02, nil, false},
		// The lab's node, both fits: the first starts read a high
		// speedup and the window grows early in the burst. A window of
		// 30 held through the burst gave 0.84 / 1.23 on the rising node
		// and the latency-based loop before this one 0.93 / 1.61 (the
		// lab's symptom: cut to 15-30, a long tail); a window of 50 held
		// from the start 0.76 / 1.02, the best a fixed window does.
		{"rate rising with the pods starting", risingNode, 0.9, 1.1, nil, true},
		{"rate rising by fixed delays", delayNode, 0.88, 1.05, nil, true},
		// No window does well here: held from the start, 30 gave
		// 0.86 / 1.25, 45 0.85 / 1.12, 80 0.94 / 1.04. The more pods
		// start, the more of the CPU they take from the other work.
		{"rate rising against other work", loadedNode, 0.97, 1.2, nil, true},
		// Some of the unloaded start not shared (probes, sync periods):
		// the speedup reads high and the window grows first, then the
		// rate plateaus. Growing costs these nodes some median (a window
		// held at 15 gave 0.63 here); cutting the rising ones would cost
		// their tail far more.
		{"sharing plus a fixed second", node{rate: 3.5, create: 200 * time.Millisecond, after: time.Second}, 0.85, 1.02, nil, true},
		// A faster node, likewise.
		{"10 pods a second", node{rate: 10, create: 200 * time.Millisecond, after: 300 * time.Millisecond}, 0.85, 1.02, nil, true},
		// The baseline learned while quiet, then every start 2 s slower:
		// the quiet baseline is out of reach, and the window must not
		// collapse (a latency threshold cut it round after round to the
		// minimum here, and the node idled between starts).
		{"slowed by other work", node{rate: 3.5, create: 200 * time.Millisecond, after: 100 * time.Millisecond}, 0.75, 1.15,
			&node{rate: 3.5, create: 200 * time.Millisecond, after: 2 * time.Second}, false},
		// The lab with other work on its two CPUs (the run that collapsed
		// the window before cuts were bounded by a halving and a floor):
		// the baseline learned quiet, the burst on a node at 1 pod a
		// second with 3 s of every start not shared.
		{"the lab under load", node{rate: 2.5, create: 200 * time.Millisecond, after: 300 * time.Millisecond}, 0.75, 1.05,
			&node{rate: 1, create: 200 * time.Millisecond, after: 3 * time.Second}, false},
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
				st := p.Stats(pclk.Now())
				t.Logf("%3d at once: paced p50 %5.1fs p95 %5.1fs (%d waited, window %.1f-%.1f, rate %.2f/s) | unpaced p50 %5.1fs p95 %5.1fs | ratio %.2f / %.2f",
					n, pm.Seconds(), p95.Seconds(), paced.paced, paced.lo, paced.hi, st.Rate, um.Seconds(), u95.Seconds(),
					pm.Seconds()/um.Seconds(), p95.Seconds()/u95.Seconds())
				if n <= 25 {
					if paced.paced != 0 || !slices.Equal(paced.lat, unpaced.lat) {
						t.Errorf("%d at once: %d wake-ups paced, latencies %v, want none and %v", n, paced.paced, paced.lat, unpaced.lat)
					}
				} else {
					if pm.Seconds() > c.median*um.Seconds() {
						t.Errorf("%d at once: paced median %v, want ≤ %.2f × unpaced %v", n, pm, c.median, um)
					}
					if p95.Seconds() > c.p95*u95.Seconds() {
						t.Errorf("%d at once: paced p95 %v, want ≤ %.2f × unpaced %v", n, p95, c.p95, u95)
					}
					// Grown first: never below the initial window. Cut
					// first: below it, never below the minimum.
					grew := paced.lo >= DefaultInitial && paced.hi > DefaultInitial
					if grew != c.grows || paced.lo < DefaultMin {
						t.Errorf("%d at once: window %.1f-%.1f, want grown first: %v, never below %d", n, paced.lo, paced.hi, c.grows, DefaultMin)
					}
				}
				idle(pclk, p)
				idle(uclk, nil)
			}
		})
	}
}

// TestSimulatedProbes: a move the first starts chose wrongly is undone by
// the rate it delivered, in a burst long enough for rounds to end. A cut
// on the rising node cost rate: restored, and the window grows; growth on
// the processor-sharing node raised no rate: back to the window before.
func TestSimulatedProbes(t *testing.T) {
	for _, c := range []struct {
		name    string
		nd      node
		speedup float64 // forces the first move: huge cuts, tiny grows
		check   func(r burstResult) bool
		want    string
	}{
		{"cut on a rising node", risingNode, 1e9,
			func(r burstResult) bool { return r.lo < 30 && r.last > 30 }, "cut below 30, then above 30"},
		{"growth on a shared node", psNode, 1e-9,
			func(r burstResult) bool { return r.hi > 30 && r.last == 30 }, "grown above 30, then back to 30"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			p := New(Options{Speedup: c.speedup})
			simulate(t, clk, p, c.nd, 1)
			idle(clk, p)
			r := simulate(t, clk, p, c.nd, 400)
			t.Logf("window %.1f-%.1f, last %.1f, rate %.2f/s", r.lo, r.hi, r.last, p.Stats(clk.Now()).Rate)
			if !c.check(r) {
				t.Errorf("window %.1f-%.1f, last %.1f; want %s", r.lo, r.hi, r.last, c.want)
			}
		})
	}
}
