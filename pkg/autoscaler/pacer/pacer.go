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
// The capacity estimate is a window W (pods starting at once). It moves
// only while wake-ups wait (a burst larger than the window), by probing the
// rate the cluster delivers, as TCP BBR probes bandwidth, rather than by
// reading latency as queueing, as TCP Vegas does:
//
//   - the rate: a round measures the window it starts at, on a sample of
//     the first max(4, W/4) wake-ups admitted under it, all awaited. By
//     Little's law the cluster delivered n/L pods a second, n the mean
//     starting count over a start's life and L its latency (admission →
//     first pod ready), summed over the sample. A round so lasts about
//     one start latency; a burst only a few.
//   - the first move of a burst does not wait for a round: after its
//     first 4 starts, the speedup S = n×B/L (the rate at n pods starting
//     over a lone start's, B the least latency of the last BaseWindow)
//     chooses. Below Speedup (3.5) the pods share one node (processor
//     sharing: S near 1) and fewer at once cost no rate: cut, W × Cut
//     (0.7). Otherwise the node starts pods in parallel or waits on fixed
//     delays (probe periods, kubelet loops) and more pods at once may
//     raise its rate: grow, W × Grow (1.5). The first starts are the
//     burst's quickest, so S reads high; the threshold allows for it.
//   - every later round is judged against the one before: a growth that
//     raised the rate by Gain (10 %) grows again; one that did not stops
//     at the window before it (a plateau: it delivers as much and serves
//     the queue's head sooner). A cut that cost at most Loss (5 %) cuts
//     again, down to Min (10); one that cost more is undone, and the
//     burst grows from there and cuts no more.
//   - while nothing waits, W moves back to Initial by Recover pods a
//     second: an estimate nobody exercises goes stale.
//
// Why probe the rate: on the lab the rate a node delivered rose with the
// pods starting at once (1.4 pods a second at 15, 1.9 at 30, 2.2 at 50), so
// start latency grew with the window without any waiting: a loop that
// reads that growth as queueing (Vegas' excess) cut to 15-30 and the tail
// of a burst of 100 took 1.45 times upstream's. Pure processor sharing is
// the other case: the rate is flat in n, and a small window gives the same
// rate with a much lower median. Only the rate tells the two apart. Why
// a hint for the first move: a round lasts about a start latency and a
// burst of 100 a few, and under processor sharing a window change slows or
// speeds every pod already starting, so a move made late in a burst moves
// its median the wrong way. The hint can be wrong (B from a quieter moment
// makes a loaded node look shared); the check that follows undoes a wrong
// move, but only in a burst long enough for a round to end (100 at once on
// the lab: barely). Why grow first when in doubt: a window too small costs the
// tail of a burst, one too large only its median. A node that starts
// pods in parallel without slowing down has a high speedup and a rate
// that keeps rising, so its window grows with the burst.
//
// Initial is high (30) so that bursts the lab handles well (1, 5 or 25 cold
// starts at once) are never delayed: only a burst larger than the window
// waits, and only then does the window move.
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
	"cmp"
	"maps"
	"slices"
	"strings"
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
	// Grow and Cut are the factors of a probe up and a probe down.
	Grow, Cut float64
	// Gain is the rise in delivered rate a probe up must bring to be kept
	// (0.1: 10 %); Loss is the fall a probe down may cost and still be
	// kept.
	Gain, Loss float64
	// Speedup is the least speedup (the rate at the burst's window over
	// a lone start's, read on its first starts) at which a burst probes
	// up first rather than down.
	Speedup float64
	// Recover is how many pods a second the window moves back toward
	// Initial while nothing waits.
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
	DefaultGrow       = 1.5
	DefaultCut        = 0.7
	DefaultGain       = 0.1
	DefaultLoss       = 0.05
	DefaultSpeedup    = 3.5
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
	set(&o.Grow, DefaultGrow)
	set(&o.Cut, DefaultCut)
	set(&o.Gain, DefaultGain)
	set(&o.Loss, DefaultLoss)
	set(&o.Speedup, DefaultSpeedup)
	set(&o.Recover, DefaultRecover)
	if o.StartTTL <= 0 {
		o.StartTTL = DefaultStartTTL
	}
	if o.BaseWindow <= 0 {
		o.BaseWindow = DefaultBaseWindow
	}
	o.Min = min(o.Min, o.Initial)
	o.Max = max(o.Max, o.Initial)
	o.Grow = max(o.Grow, 1)
	o.Cut = min(o.Cut, 1)
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
	// Rate is the pods a second the cluster started over the last round
	// measured while wake-ups waited, by Little's law (0: none yet).
	Rate     float64
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
	epoch    int     // the round whose sample it is in (0: none)
	pods     int
	paced    time.Duration
	reported bool
}

// phase is where a burst's probing stands.
type phase int

const (
	first     phase = iota // no move yet: the first starts choose one
	probeUp                // the window grew; keep growing while the rate rises
	probeDown              // the window was cut; keep it while the rate holds
	hold                   // the rate plateaued, or the window is at a bound: stay
)

// round measures the delivered rate at one window by Little's law: the
// mean starting count over the mean start latency of a sample of the
// wake-ups admitted under the window. The sample is the first ones
// admitted, all of them awaited: taking the first ones ready instead
// would pick the quick starts and overstate the rate.
type round struct {
	epoch      int
	window     float64
	want       int     // the sample's size
	taken      int     // admitted into it so far
	done       int     // ready so far
	count, lat float64 // the sums of their mean starting counts, latencies
}

func (r *round) rate() float64 {
	if r.lat <= 0 {
		return 0
	}
	return r.count / r.lat
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

	// The probing of the current burst: active while wake-ups wait.
	probing bool
	phase   phase
	epoch   int
	// ref is the round the last move is judged against, cur the round
	// at the current window. After a burst's first move, which does not
	// wait for a round, ref is still measuring.
	ref, cur round
	// The burst's first starts, which choose its first move: how many,
	// and the sums of their mean starting counts and latencies.
	firstN             int
	firstCnt, firstLat float64
	rate               float64 // the last round's, for Stats
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
		p.lost(g)
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
	p.lost(p.grants[key])
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
	p.probing = false
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
		// A ready pod is reported again on every update: only its first
		// report, while it was starting or awaited, is a delivered start.
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
	if !p.lastTick.IsZero() && len(p.queue) == 0 && p.window != p.o.Initial {
		step := p.o.Recover * now.Sub(p.lastTick).Seconds()
		if p.window < p.o.Initial {
			p.window = min(p.o.Initial, p.window+step)
		} else {
			p.window = max(p.o.Initial, p.window-step)
		}
	}
	p.lastTick = now
	for k, g := range p.grants {
		if now.Sub(g.admitted) >= p.o.StartTTL {
			p.lost(g)
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
	return Stats{Window: p.window, Baseline: p.baseline(now), Rate: p.rate, Starting: p.startingLocked(now), Queued: len(p.queue)}
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
		g := &grant{admitted: now, area: p.area, pods: w.pods, paced: now.Sub(w.queuedAt)}
		p.grants[w.key] = g
		if p.probing {
			p.sample(g)
		}
		starting += w.pods
		out = append(out, w.key)
	}
	switch {
	case len(p.queue) == 0:
		p.queue = nil // let the backing array go after a burst
		p.probing = false
	case !p.probing:
		// A burst larger than the window: measure what it delivers,
		// first on the wake-ups starting now, the earliest admitted
		// first.
		p.probing, p.phase = true, first
		p.firstN, p.firstLat, p.firstCnt = 0, 0, 0
		p.ref = round{}
		p.newRound()
		keys := slices.SortedFunc(maps.Keys(p.grants), func(a, b Key) int {
			if c := p.grants[a].admitted.Compare(p.grants[b].admitted); c != 0 {
				return c
			}
			return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
		})
		for _, k := range keys {
			p.sample(p.grants[k])
		}
	}
	return out
}

// observe runs the control loop on one wake-up's start latency.
func (p *Pacer) observe(now time.Time, g *grant, lat time.Duration) {
	base := p.baseline(now)
	p.addSample(now, lat)
	if !p.probing || lat <= 0 {
		return
	}
	// Little's law on this start: the mean starting count over its life.
	n := (p.area - g.area) / lat.Seconds()
	if p.phase == first && p.firstN < firstStarts {
		p.firstN++
		p.firstCnt += n
		p.firstLat += lat.Seconds()
		if p.firstN == firstStarts {
			p.firstMove(base)
		}
	}
	switch g.epoch {
	case 0: // in no sample
	case p.ref.epoch:
		p.ref.add(n, lat)
		if p.ref.done == p.ref.want {
			p.rate = p.ref.rate()
		}
	case p.cur.epoch:
		p.cur.add(n, lat)
		if p.cur.done >= p.cur.want {
			p.judge(now)
		}
	}
}

// firstStarts is how many starts of a burst choose its first move.
const firstStarts = 4

// firstMove chooses the burst's first move from its first starts, not
// waiting for a round: under processor sharing a round lasts about one
// start latency and a burst a few, so a move that waits a round comes
// too late to help. The speedup S = n×B/L (Little's law: the rate at n
// pods starting, n/L, over the rate of a lone start, 1/B) says how much
// more a node delivers with many pods at once than with one. A node that
// delivers little more is shared (pure processor sharing: S near 1), and
// fewer pods at once cost it no rate: cut. A node that delivers much more
// runs starts in parallel or waits on fixed delays (probe periods,
// kubelet loops), and more pods at once may raise its rate: grow. Either
// move is checked against the rate measured at the window before it.
// The first starts are the quickest of the burst, so S reads high; the
// threshold allows for it.
func (p *Pacer) firstMove(base time.Duration) {
	p.ref, p.cur = p.cur, round{}
	if base > 0 && base.Seconds()*p.firstCnt/p.firstLat < p.o.Speedup {
		p.down()
	} else {
		p.up()
	}
	p.newRound()
}

func (r *round) add(n float64, lat time.Duration) {
	r.count += n
	r.lat += lat.Seconds()
	r.done++
}

// judge ends the current round: keeps a move that paid, undoes one that
// did not, and makes the next.
func (p *Pacer) judge(now time.Time) {
	r, best := p.cur.rate(), p.ref.rate()
	p.rate = r
	switch p.phase {
	case probeUp:
		switch {
		case best == 0 || r >= best*(1+p.o.Gain):
			p.ref = p.cur
			p.up()
		default:
			// A plateau: the smaller window delivers about as much and
			// serves the queue's head sooner.
			p.window, p.phase = p.ref.window, hold
		}
	case probeDown:
		if best == 0 || r >= best*(1-p.o.Loss) {
			p.ref = p.cur
			p.down()
		} else {
			// The cut cost rate: the node delivers more with more pods
			// at once. Restore and grow; this burst cuts no more.
			p.window = p.ref.window
			p.up()
		}
	default:
		p.ref = p.cur
	}
	p.newRound()
}

// newRound starts measuring the window, on a sample of a quarter of it
// (at least 4 wake-ups): enough to average out how starts differ, few
// enough for a round to end about one start latency after it began.
func (p *Pacer) newRound() {
	p.epoch++
	p.cur = round{epoch: p.epoch, window: p.window, want: max(4, int(p.window/4))}
}

// sample adds g to the current round's sample if it is not full.
func (p *Pacer) sample(g *grant) {
	if p.cur.taken < p.cur.want {
		p.cur.taken++
		g.epoch = p.cur.epoch
	}
}

// lost drops g, gone without a ready pod, from the current round's
// sample: the next admission takes its place.
func (p *Pacer) lost(g *grant) {
	if g != nil && p.probing && g.epoch == p.cur.epoch {
		p.cur.taken--
	}
}

func (p *Pacer) up() {
	if w := min(p.o.Max, p.window*p.o.Grow); w > p.window {
		p.window, p.phase = w, probeUp
		return
	}
	p.phase = hold
}

func (p *Pacer) down() {
	if w := max(p.o.Min, p.window*p.o.Cut); w < p.window {
		p.window, p.phase = w, probeDown
		return
	}
	p.phase = hold
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
