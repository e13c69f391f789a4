// Package pacer admits scale-ups from zero in arrival order while the pods
// being started stay under an estimate of the cluster's pod-start capacity.
//
// Why: a node starts pods at a roughly fixed rate, and pods started together
// share it (processor sharing): 100 pods asked for at once on a node that
// starts 3.5 pods a second all become ready after about 28 s, none earlier.
// Admitted a few at a time in arrival order, the same pods finish at the same
// overall rate, but the first one after a second and the median after half
// the time. Nothing is dropped: a wake-up that does not fit waits here, in a
// queue bounded by the number of revisions (one entry per revision).
//
// The capacity estimate is a window W (pods starting at once), kept by a
// delay-based AIMD loop in the family of TCP Vegas, with Westwood's
// adaptive decrease:
//
//   - signal: each admitted wake-up's start latency L (admission → its
//     first pod ready) and the mean starting count n over its life. By
//     Little's law n/L is the rate the cluster delivered; with the baseline
//     B, the least latency seen over the last BaseWindow (the unloaded start
//     time), n×B/L pods were really being started and the other
//     n×(1−B/L) were waiting for the node: the excess.
//   - decrease: an excess above Queue means start latency grows with the
//     starting count (saturation); the window drops to what the cluster
//     delivers plus the allowance, n×B/L + Queue (Westwood sets its window
//     to bandwidth × minimum RTT the same way), but never below half the
//     window nor below Min (10). At most once per round: only a wake-up
//     admitted after the last cut may cut again, as TCP cuts once per
//     round trip. The bounds are there because a real node is not pure
//     processor sharing: probe periods and kubelet loops run in parallel,
//     so it delivers fewer pods a second at a small window. On the lab
//     under other load, an unbounded cut from the first round (30 pods,
//     all late) went to 9 and the burst's last tenth took twice
//     upstream's time.
//   - additive increase: W ← W + 1 for each start without such an excess
//     while wake-ups wait;
//   - while nothing waits, W regrows toward Initial by Recover pods a
//     second: an estimate nobody exercises goes stale, and with no queue a
//     large window costs nothing.
//
// Why delay-based: an oversubscribed node fails nothing, it only starts
// pods later, so latency is the one signal there is. Why an excess count
// rather than a latency threshold (latency above k×B): on a node slowed by
// other work, the baseline from a quiet moment is out of reach at any
// window, and a threshold then cuts round after round down to the minimum,
// where the node idles between starts. The excess shrinks with the window
// (n×(1−B/L)), so the loop settles at Queue/(1−B/L) pods, enough to keep
// such a node busy. Why the rate-based decrease: the first round of a
// burst is the whole initial window, and under processor sharing its
// starts all end together and late; halving from there takes several slow
// rounds to reach a useful window. A node that starts pods in parallel
// without slowing down shows no excess, so it is never paced.
//
// Initial is high (30) so that bursts the lab handles well (1, 5 or 25 cold
// starts at once) are never delayed: only a burst larger than the window,
// on a cluster whose start latency grows with the starting count, is paced.
//
// "Starting" counts the pods not yet ready (not terminating, created less
// than StartTTL ago: a pod stuck longer is not starting, it is broken), plus
// for each admitted wake-up whose first pod is not ready the pods it asked
// for that do not exist yet. Pods of warm revisions (1 → N) count too, but
// their scale-ups never wait here: only scale-ups from zero are offered.
//
// The Pacer holds no goroutine and no clock: callers pass the time in, and
// get back the keys a call admitted, to scale them.
package pacer

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Key names a revision (its PodAutoscaler).
type Key = types.NamespacedName

// Options tune the control loop; zero values take the defaults.
type Options struct {
	// Initial is the window a burst starts with, and Min and Max bound it.
	Initial, Min, Max float64
	// Queue is how many pods may wait for the node beyond those it is
	// starting (the excess allowed before the window is cut).
	Queue float64
	// Recover is how many pods a second the window regrows toward Initial
	// while nothing waits.
	Recover float64
	// StartTTL bounds how long a pod or an admitted wake-up counts as
	// starting.
	StartTTL time.Duration
	// BaseWindow is how long a start latency stays a baseline candidate.
	BaseWindow time.Duration
}

// Defaults.
const (
	DefaultInitial    = 30
	DefaultMin        = 10
	DefaultMax        = 10000
	DefaultQueue      = 8
	DefaultRecover    = 2
	DefaultStartTTL   = 2 * time.Minute
	DefaultBaseWindow = 10 * time.Minute
)

func (o *Options) defaults() {
	set := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&o.Initial, DefaultInitial)
	set(&o.Min, DefaultMin)
	set(&o.Max, DefaultMax)
	set(&o.Queue, DefaultQueue)
	set(&o.Recover, DefaultRecover)
	if o.StartTTL <= 0 {
		o.StartTTL = DefaultStartTTL
	}
	if o.BaseWindow <= 0 {
		o.BaseWindow = DefaultBaseWindow
	}
	o.Min = min(o.Min, o.Initial)
	o.Max = max(o.Max, o.Initial)
}

// PodState is what a pod event tells the Pacer.
type PodState int

// Pod states.
const (
	// PodStarting: the pod exists and is not ready.
	PodStarting PodState = iota
	// PodReady: the pod is ready.
	PodReady
	// PodGone: the pod was deleted, is terminating, or ended.
	PodGone
)

// Admission is the answer to an Offer.
type Admission struct {
	// OK: the caller may scale the revision from zero now.
	OK bool
	// Paced is how long the wake-up waited in the queue (0: not at all).
	Paced time.Duration
	// First is set on the first OK answer for this admission, so a caller
	// that offers again (a retry) records the paced time once.
	First bool
}

// Stats are the Pacer's current figures.
type Stats struct {
	// Window is the capacity estimate, in pods starting at once.
	Window float64
	// Baseline is the least start latency seen lately (0: none yet).
	Baseline time.Duration
	Starting int
	Queued   int
}

type waiting struct {
	key      Key
	arrival  time.Time // the first poke: the queue's order
	queuedAt time.Time // when it started waiting here
	pods     int
}

type grant struct {
	admitted time.Time
	area     float64 // the Pacer's area when admitted
	pods     int
	paced    time.Duration
	reported bool
}

type sample struct {
	at  time.Time
	lat time.Duration
}

// Pacer is safe for concurrent use.
type Pacer struct {
	o Options

	mu       sync.Mutex
	window   float64
	lastCut  time.Time // admissions at or before it cannot cut again
	lastTick time.Time
	queue    []waiting // by arrival
	grants   map[Key]*grant
	// starting pods by revision, pod name → creation time.
	starting map[Key]map[string]time.Time
	// mins is a monotonic deque: the sliding-window minimum of latencies.
	mins []sample
	// area is the integral of the starting count over time (pod-seconds),
	// up to areaAt, when the count was areaN.
	area   float64
	areaAt time.Time
	areaN  int
}

// New returns a Pacer whose window is o.Initial.
func New(o Options) *Pacer {
	o.defaults()
	return &Pacer{o: o, window: o.Initial, grants: map[Key]*grant{}, starting: map[Key]map[string]time.Time{}}
}

// Offer asks to scale key from zero to pods, for a wake-up whose first poke
// arrived at arrival. An OK answer means scale now; otherwise the wake-up
// waits in arrival order and a later call returns key among the admitted
// ones. Offering a key already waiting or admitted is harmless.
func (p *Pacer) Offer(now time.Time, key Key, arrival time.Time, pods int) Admission {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.integrate(now)
	defer p.recount(now)
	if g := p.grants[key]; g != nil {
		first := !g.reported
		g.reported = true
		return Admission{OK: true, Paced: g.paced, First: first}
	}
	pods = max(pods, 1)
	if i := p.find(key); i >= 0 {
		p.queue[i].pods = pods
	} else {
		w := waiting{key: key, arrival: arrival, queuedAt: now, pods: pods}
		// Offers come nearly in arrival order; insert after every earlier
		// or equal arrival, so equal arrivals keep their offer order.
		i := len(p.queue)
		for i > 0 && p.queue[i-1].arrival.After(arrival) {
			i--
		}
		p.queue = slices.Insert(p.queue, i, w)
	}
	p.admitLocked(now)
	if g := p.grants[key]; g != nil {
		g.reported = true
		return Admission{OK: true, Paced: g.paced, First: true}
	}
	return Admission{}
}

// Withdraw drops key's wake-up, waiting or admitted without a pod yet: it
// no longer wants to leave zero. It returns the keys this admitted.
func (p *Pacer) Withdraw(now time.Time, key Key) []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.integrate(now)
	defer p.recount(now)
	if i := p.find(key); i >= 0 {
		p.queue = slices.Delete(p.queue, i, i+1)
	}
	if g := p.grants[key]; g != nil && len(p.starting[key]) == 0 {
		delete(p.grants, key)
	}
	return p.admitLocked(now)
}

// Forget drops everything about key (its PodAutoscaler is gone).
func (p *Pacer) Forget(now time.Time, key Key) []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.integrate(now)
	defer p.recount(now)
	if i := p.find(key); i >= 0 {
		p.queue = slices.Delete(p.queue, i, i+1)
	}
	delete(p.grants, key)
	delete(p.starting, key)
	return p.admitLocked(now)
}

// Flush admits every waiting wake-up (pacing was switched off).
func (p *Pacer) Flush(now time.Time) []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.integrate(now)
	defer p.recount(now)
	var out []Key
	for _, w := range p.queue {
		p.grants[w.key] = &grant{admitted: now, area: p.area, pods: w.pods, paced: now.Sub(w.queuedAt)}
		out = append(out, w.key)
	}
	p.queue = p.queue[:0]
	return out
}

// Pod tells the Pacer about pod of revision key, created at created. It
// returns the keys this admitted.
func (p *Pacer) Pod(now time.Time, key Key, pod string, created time.Time, st PodState) []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.integrate(now)
	defer p.recount(now)
	switch st {
	case PodStarting:
		m := p.starting[key]
		if m == nil {
			m = map[string]time.Time{}
			p.starting[key] = m
		}
		m[pod] = created
		return nil // nothing freed
	case PodReady:
		p.dropPod(key, pod)
		if g := p.grants[key]; g != nil {
			delete(p.grants, key)
			p.observe(now, g, now.Sub(g.admitted))
		}
	case PodGone:
		p.dropPod(key, pod)
	}
	return p.admitLocked(now)
}

// Tick lets time pass: the window regrows while nothing waits, and pods and
// admissions older than StartTTL stop counting. It returns the keys this
// admitted.
func (p *Pacer) Tick(now time.Time) []Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.integrate(now)
	defer p.recount(now)
	if !p.lastTick.IsZero() && len(p.queue) == 0 && p.window < p.o.Initial {
		dt := now.Sub(p.lastTick).Seconds()
		p.window = min(p.o.Initial, p.window+p.o.Recover*dt)
	}
	p.lastTick = now
	for k, g := range p.grants {
		if now.Sub(g.admitted) >= p.o.StartTTL {
			delete(p.grants, k)
		}
	}
	for k, m := range p.starting {
		for pod, c := range m {
			if now.Sub(c) >= p.o.StartTTL {
				delete(m, pod)
			}
		}
		if len(m) == 0 {
			delete(p.starting, k)
		}
	}
	return p.admitLocked(now)
}

// Stats returns the current figures.
func (p *Pacer) Stats(now time.Time) Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Window: p.window, Baseline: p.baseline(now), Starting: p.startingLocked(now), Queued: len(p.queue)}
}

func (p *Pacer) find(key Key) int {
	return slices.IndexFunc(p.queue, func(w waiting) bool { return w.key == key })
}

func (p *Pacer) dropPod(key Key, pod string) {
	if m := p.starting[key]; m != nil {
		delete(m, pod)
		if len(m) == 0 {
			delete(p.starting, key)
		}
	}
}

// startingLocked counts starting pods, and the pods admitted wake-ups asked
// for that do not exist yet.
func (p *Pacer) startingLocked(now time.Time) int {
	n := 0
	for _, m := range p.starting {
		for _, c := range m {
			if now.Sub(c) < p.o.StartTTL {
				n++
			}
		}
	}
	for k, g := range p.grants {
		n += max(0, g.pods-len(p.starting[k]))
	}
	return n
}

// admitLocked admits waiting wake-ups in order while the starting pods stay
// under the window. The head is admitted whenever anything fits, even if it
// asks for more pods than fit, so a large ask is never starved.
func (p *Pacer) admitLocked(now time.Time) []Key {
	if len(p.queue) == 0 {
		return nil
	}
	starting := p.startingLocked(now)
	var out []Key
	for len(p.queue) > 0 && float64(starting) < p.window {
		w := p.queue[0]
		p.queue = p.queue[1:]
		p.grants[w.key] = &grant{admitted: now, area: p.area, pods: w.pods, paced: now.Sub(w.queuedAt)}
		starting += w.pods
		out = append(out, w.key)
	}
	if len(p.queue) == 0 {
		p.queue = nil // let the backing array go after a burst
	}
	return out
}

// observe runs the control loop on one start latency.
func (p *Pacer) observe(now time.Time, g *grant, lat time.Duration) {
	base := p.baseline(now)
	p.addSample(now, lat)
	if base == 0 {
		return // the first sample only sets the baseline
	}
	// Little's law on this start: the mean starting count over its life.
	mean := (p.area - g.area) / lat.Seconds()
	busy := mean * base.Seconds() / lat.Seconds()
	switch {
	case mean-busy > p.o.Queue:
		if g.admitted.After(p.lastCut) {
			// At most a halving per round: the estimate comes from one
			// start, and a node is not pure processor sharing (probe
			// periods and kubelet loops run in parallel), so a window cut
			// far below what it delivered idles the node.
			p.window = max(p.o.Min, p.window/2, min(p.window, busy+p.o.Queue))
			p.lastCut = now
		}
	case len(p.queue) > 0:
		p.window = min(p.o.Max, p.window+1)
	}
}

// integrate adds the starting count since the last event to the area.
func (p *Pacer) integrate(now time.Time) {
	if !p.areaAt.IsZero() && now.After(p.areaAt) {
		p.area += float64(p.areaN) * now.Sub(p.areaAt).Seconds()
	}
	p.areaAt = now
}

// recount notes the starting count after an event changed it.
func (p *Pacer) recount(now time.Time) { p.areaN = p.startingLocked(now) }

func (p *Pacer) addSample(now time.Time, lat time.Duration) {
	for len(p.mins) > 0 && p.mins[len(p.mins)-1].lat >= lat {
		p.mins = p.mins[:len(p.mins)-1]
	}
	p.mins = append(p.mins, sample{at: now, lat: lat})
}

// baseline is the least latency of the last BaseWindow (0: none).
func (p *Pacer) baseline(now time.Time) time.Duration {
	for len(p.mins) > 0 && now.Sub(p.mins[0].at) > p.o.BaseWindow {
		p.mins = p.mins[1:]
	}
	if len(p.mins) == 0 {
		return 0
	}
	return p.mins[0].lat
}
