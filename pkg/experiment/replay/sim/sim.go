// Package sim replays one function's requests against Thaw's scaling code on
// a simulated clock: the per-second concurrency windows (pkg/autoscaler/window), the KPA
// decider (pkg/autoscaler/decider), upstream's scale-to-zero rules (stable window, grace
// period, pod retention), and for the learned policy the keep-alive histogram
// (pkg/autoscaler/keepalive). Pods take a fixed cold-start time to become ready.
//
// The model: a pod serves any number of requests at once (containerConcurrency
// 0, upstream's default); a request that finds no ready pod waits for the
// next one (a cold start), the first such request pokes the decider at once
// as the activator does; the decider runs every 2 s while the revision has
// pods or traffic, on the windows fed each second with the time-weighted
// concurrency (queued requests included); scale-to-zero follows the KPA: the
// revision turns inactive after a stable window wanting 0, and its last pod
// goes when grace and retention have passed (or, learned, when the policy no
// longer wants it). Scale-ups never wait for a policy. A pre-warm starts its
// pod one cold-start time before the policy wants it, so that it is ready
// then (the autoscaler knows its cold-start time from its own records).
package sim

import (
	"container/heap"
	"fmt"
	"slices"
	"time"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/autoscaler/window"
)

// TickInterval is how often the multiscaler decides a revision.
const TickInterval = 2 * time.Second

// Policy is a scale-to-zero policy: upstream's knobs, or the learned one.
type Policy struct {
	Name string
	// Grace is scale-to-zero-grace-period, Retention
	// scale-to-zero-pod-retention-period.
	Grace, Retention time.Duration
	// Learned, when set, replaces the retention with the keep-alive
	// policy's windows and adds pre-warming.
	Learned *keepalive.Config
}

// Upstream is Knative's default: stable window 60 s, grace 30 s.
func Upstream() Policy { return Policy{Name: "upstream", Grace: 30 * time.Second} }

// Fixed keeps the last pod for d after the revision turns inactive
// (scale-to-zero-pod-retention-period = d).
func Fixed(d time.Duration) Policy {
	return Policy{Name: "fixed-" + shortDur(d), Grace: 30 * time.Second, Retention: d}
}

// Learned is Thaw's keep-alive policy with cfg, under name.
func Learned(name string, cfg keepalive.Config) Policy {
	return Policy{Name: name, Grace: 30 * time.Second, Learned: &cfg}
}

func shortDur(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	default:
		return d.String()
	}
}

// Model holds what is the same for every policy.
type Model struct {
	// ColdStart is the time from the scale-up to a ready pod.
	ColdStart time.Duration
	// ColdStartAt, when set, gives the cold-start time of a scale-up at
	// offset at of the run instead of ColdStart: a cluster's start time
	// varies with its load (tens of seconds while every function starts at
	// once, a second or two when the node is quiet), and a single median
	// makes pods come back too early or too late against the idle gaps
	// that decide the next cold start.
	ColdStartAt func(at time.Duration) time.Duration
	// Config is config-autoscaler (nil: defaults).
	Config *asconfig.Config
	// ProxyFastPath models upstream's fast path to zero: when the
	// activator has been in the path for longer than the grace period
	// (containerConcurrency 0 with the default target burst capacity keeps
	// it there while a revision has fewer than three pods), the last pod
	// goes as soon as the revision is inactive and the retention has
	// passed, without waiting for the grace. Off, the grace is taken in
	// full (the simulation's conservative default).
	ProxyFastPath bool
}

// Result is one function under one policy.
type Result struct {
	Requests int
	// ColdRequests found no ready pod and waited; ColdStarts are the
	// scale-ups from zero that requests caused; PreWarms those the policy
	// made ahead of a request.
	ColdRequests, ColdStarts, PreWarms int
	// AddedLatency is the total waiting of cold requests; MaxAddedLatency
	// the longest.
	AddedLatency, MaxAddedLatency time.Duration
	// IdlePodSeconds is the time ready pods spent serving nothing (a pod is
	// serving while at least one request is on it); PodSeconds all ready
	// time.
	IdlePodSeconds, PodSeconds float64
	// Decisions counts the decider's runs.
	Decisions int
	// FinalMode is the keep-alive policy's mode at the end (learned only).
	FinalMode string
}

// ColdPercent is the share of requests that were cold, in percent.
func (r Result) ColdPercent() float64 {
	if r.Requests == 0 {
		return 0
	}
	return 100 * float64(r.ColdRequests) / float64(r.Requests)
}

// simClock is the keep-alive policy's clock: the simulation's time.
type simClock struct{ now time.Time }

func (c *simClock) Now() time.Time                  { return c.now }
func (c *simClock) Since(t time.Time) time.Duration { return c.now.Sub(t) }

// epoch is the simulated time of trace offset 0, a whole second.
var epoch = time.Date(2019, 7, 15, 0, 0, 0, 0, time.UTC)

// endHeap holds the end times of requests in flight.
type endHeap []time.Duration

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h endHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *endHeap) Push(x any)        { *h = append(*h, x.(time.Duration)) }
func (h *endHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

const never = time.Duration(1<<63 - 1)

// run is the state of one replay.
type run struct {
	m   Model
	pol Policy
	cfg *asconfig.Config
	res Result

	dec            *decider.Decider
	stable, panicW *window.Buckets
	ka             *keepalive.Policy
	clk            *simClock

	now      time.Duration
	ready    int
	starting []time.Duration // ready times, ascending
	inflight int
	ends     endHeap
	waiting  []Request

	// PA state: active since, or inactive since.
	active        bool
	activeSince   time.Duration
	inactiveSince time.Duration

	ticking  bool
	nextTick time.Duration
	wake     time.Duration // the keep-alive policy's next pre-warm, never if none

	// per-second concurrency integration
	sec int64
	acc float64
	at  time.Duration
}

func (r *run) t(d time.Duration) time.Time { return epoch.Add(d) }

// coldStart is the time a scale-up made now takes to a ready pod.
func (r *run) coldStart() time.Duration {
	if r.m.ColdStartAt != nil {
		return r.m.ColdStartAt(r.now)
	}
	return r.m.ColdStart
}

// Spec is the decider spec of a revision with no annotations and
// containerConcurrency 0 under cfg, as the KPA derives it.
func Spec(cfg *asconfig.Config) decider.Spec {
	total := cfg.ContainerConcurrencyTargetDefault
	return decider.Spec{
		MaxScaleUpRate:      cfg.MaxScaleUpRate,
		MaxScaleDownRate:    cfg.MaxScaleDownRate,
		ScalingMetric:       decider.MetricConcurrency,
		TargetValue:         max(asconfig.TargetMin, total*cfg.ContainerConcurrencyTargetFraction),
		TotalValue:          total,
		TargetBurstCapacity: cfg.TargetBurstCapacity,
		ActivatorCapacity:   cfg.ActivatorCapacity,
		PanicThreshold:      cfg.PanicThresholdPercentage / 100,
		StableWindow:        cfg.StableWindow,
		ScaleDownDelay:      cfg.ScaleDownDelay,
		InitialScale:        cfg.InitialScale,
		Reachable:           true,
	}
}

// Run replays w under pol. w is Reset first.
func Run(w Workload, pol Policy, m Model) (Result, error) {
	cfg := m.Config
	if cfg == nil {
		cfg = asconfig.DefaultConfig()
	}
	pw := time.Duration(float64(cfg.StableWindow) * cfg.PanicWindowPercentage / 100).Round(time.Second)
	pw = max(pw, time.Second)
	r := &run{
		m: m, pol: pol, cfg: cfg,
		dec:    decider.New(Spec(cfg), 0, epoch),
		stable: window.NewLinear(cfg.StableWindow),
		panicW: window.NewLinear(pw),
		clk:    &simClock{now: epoch},
		wake:   never,
		sec:    -1,
	}
	if pol.Learned != nil {
		kc := *pol.Learned
		if kc.MinHold == 0 {
			// The pod stays a stable window and the grace anyway.
			kc.MinHold = cfg.StableWindow + pol.Grace
		}
		ka, err := keepalive.New(kc, r.clk)
		if err != nil {
			return Result{}, err
		}
		r.ka = ka
	}
	w.Reset()
	horizon := w.Horizon()
	next, more := w.Next()
	for {
		// The next event: a request end, a pod ready, an arrival, a tick,
		// a pre-warm.
		t := never
		if len(r.ends) > 0 {
			t = r.ends[0]
		}
		if len(r.starting) > 0 {
			t = min(t, r.starting[0])
		}
		if more {
			t = min(t, next.At)
		}
		if r.ticking {
			t = min(t, r.nextTick)
		}
		t = min(t, r.wake)
		if t == never || t >= horizon {
			r.advance(horizon)
			break
		}
		r.advance(t)
		switch {
		case len(r.ends) > 0 && r.ends[0] == t:
			heap.Pop(&r.ends)
			r.inflight--
			r.maybeIdle()
		case len(r.starting) > 0 && r.starting[0] == t:
			r.starting = r.starting[1:]
			r.podReady()
		case more && next.At == t:
			r.arrive(next)
			next, more = w.Next()
		case r.ticking && r.nextTick == t:
			r.nextTick += TickInterval
			r.tick()
		case r.wake == t:
			r.wake = never
			r.preWarm()
		}
	}
	if r.ka != nil {
		r.res.FinalMode = r.ka.Windows().Mode.String()
	}
	return r.res, nil
}

// pods is the scale: ready and starting pods.
func (r *run) pods() int { return r.ready + len(r.starting) }

// conc is the concurrency the revision reports: requests in flight and
// queued.
func (r *run) conc() int { return r.inflight + len(r.waiting) }

// advance moves the clock to t, integrating pod time and concurrency.
func (r *run) advance(t time.Duration) {
	if t <= r.now {
		return
	}
	dt := (t - r.now).Seconds()
	r.res.PodSeconds += float64(r.ready) * dt
	r.res.IdlePodSeconds += float64(r.ready-min(r.ready, r.inflight)) * dt
	r.integrate(t)
	r.now = t
	r.clk.now = r.t(t)
}

// integrate feeds each whole second before t into the windows with the
// time-weighted concurrency of that second. Seconds at zero pods and no
// traffic are not fed (nothing scrapes then); their zero is what the
// windows assume for unwritten seconds.
func (r *run) integrate(t time.Duration) {
	c := float64(r.conc())
	feeding := r.pods() > 0 || c > 0
	tSec := int64(t / time.Second)
	if r.sec < 0 || (!feeding && r.acc == 0) {
		// Nothing to carry: jump to t's second.
		r.sec, r.at, r.acc = tSec, t, 0
		return
	}
	for r.sec < tSec {
		end := time.Duration(r.sec+1) * time.Second
		r.acc += c * (end - r.at).Seconds()
		r.record(r.sec, r.acc)
		r.sec++
		r.at, r.acc = end, 0
		if !feeding {
			r.sec, r.at = tSec, time.Duration(tSec)*time.Second
			break
		}
	}
	r.acc += c * (t - r.at).Seconds()
	r.at = t
}

func (r *run) record(sec int64, v float64) {
	at := epoch.Add(time.Duration(sec) * time.Second)
	r.stable.Record(at, v)
	r.panicW.Record(at, v)
}

// decide runs the decider now and applies its wish through the KPA rules.
func (r *run) decide() {
	now := r.t(r.now)
	obs := decider.Observation{Stable: r.stable.Average(now), Panic: r.panicW.Average(now), Ready: r.ready}
	d := r.dec.Scale(now, obs)
	r.res.Decisions++
	if !d.Valid {
		return
	}
	want := int(d.DesiredScale)
	if want == 0 && !r.cfg.EnableScaleToZero {
		want = 1
	}
	if want == 0 && r.conc() > 0 {
		// Never drop the pod under a request (the windows lag a second).
		want = 1
	}
	if want > 0 && r.ready > 0 && !r.active {
		// Traffic on an inactive revision with a pod: the PA turns
		// active again (its transition time is now).
		r.active, r.activeSince = true, r.now
	}
	if want == 0 && r.pods() > 0 {
		want = r.scaleToZero()
	}
	r.setScale(want)
}

// scaleToZero applies the KPA's rules to a wanted 0 and returns the scale.
func (r *run) scaleToZero() int {
	if r.active {
		if r.now-r.activeSince < r.cfg.StableWindow {
			return 1
		}
		// Deactivating: the activator goes into the path; pods stay.
		r.active, r.inactiveSince = false, r.now
		return r.pods()
	}
	inactive := r.now - r.inactiveSince
	grace := r.pol.Grace
	if r.m.ProxyFastPath {
		grace = 0
	}
	if r.ka != nil {
		if inactive >= grace && !r.ka.Plan().Pod {
			return 0
		}
		return r.pods()
	}
	if inactive >= max(grace, r.pol.Retention) {
		return 0
	}
	return r.pods()
}

// setScale starts or removes pods to reach n (starting ones go first).
func (r *run) setScale(n int) {
	cur := r.pods()
	switch {
	case n > cur:
		for range n - cur {
			ready := r.now + r.coldStart()
			// Keep starting ascending: a later scale-up may be ready
			// sooner when the cluster's start time fell in between.
			i, _ := slices.BinarySearch(r.starting, ready)
			r.starting = slices.Insert(r.starting, i, ready)
		}
	case n < cur:
		drop := cur - n
		k := min(drop, len(r.starting))
		r.starting = r.starting[:len(r.starting)-k]
		r.ready -= drop - k
		if r.pods() == 0 {
			r.schedulePreWarm()
		}
	}
	r.updateTicking()
}

// updateTicking runs the decider's 2 s ticks only while there is
// something to decide: pods or traffic. At zero with no traffic the
// decider would keep wanting 0.
func (r *run) updateTicking() {
	on := r.pods() > 0 || r.conc() > 0
	if on && !r.ticking {
		// Ticks stay on the multiscaler's 2 s grid.
		r.nextTick = (r.now/TickInterval + 1) * TickInterval
	}
	r.ticking = on
}

func (r *run) tick() { r.decide() }

func (r *run) arrive(q Request) {
	if r.ka != nil {
		r.ka.Arrivals(1)
	}
	r.res.Requests++
	if r.ready > 0 {
		r.start(q)
		return
	}
	r.res.ColdRequests++
	r.waiting = append(r.waiting, q)
	if r.pods() == 0 {
		// The activator's poke: a stat now, and a decision at once.
		r.wake = never
		r.res.ColdStarts++
		r.record(int64(r.now/time.Second), 1)
		r.decide()
		if r.pods() == 0 {
			// The decider must want a pod for a request; keep the model
			// honest if a config says otherwise.
			r.setScale(1)
		}
	}
	r.updateTicking()
}

func (r *run) start(q Request) {
	r.inflight++
	heap.Push(&r.ends, r.now+q.Duration)
}

func (r *run) podReady() {
	r.ready++
	if r.ready == 1 {
		r.active, r.activeSince = true, r.now
	}
	for _, q := range r.waiting {
		wait := r.now - q.At
		r.res.AddedLatency += wait
		r.res.MaxAddedLatency = max(r.res.MaxAddedLatency, wait)
		r.start(q)
	}
	r.waiting = r.waiting[:0]
}

func (r *run) maybeIdle() {
	if r.conc() == 0 && r.ka != nil {
		r.ka.Idle()
	}
}

// schedulePreWarm sets the wake-up at which the learned policy wants a pod
// back.
func (r *run) schedulePreWarm() {
	r.wake = never
	if r.ka == nil || r.conc() > 0 {
		return
	}
	pl := r.ka.Plan()
	if pl.Pod {
		// Wanted now (the plan changed since the pod went): at once.
		r.wake = r.now
		return
	}
	if !pl.Next.IsZero() {
		r.wake = max(r.now, pl.Next.Sub(epoch)-r.coldStart())
	}
}

func (r *run) preWarm() {
	if r.pods() > 0 || r.conc() > 0 || r.ka == nil {
		return
	}
	// Wanted now, or within a cold start: the pod is ready when wanted.
	if pl := r.ka.Plan(); !pl.Pod && (pl.Next.IsZero() || pl.Next.Sub(r.clk.now) > r.coldStart()) {
		return
	}
	r.res.PreWarms++
	r.setScale(1)
}
