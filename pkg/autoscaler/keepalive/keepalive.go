// Package keepalive learns, per revision, how long to keep its last pod after
// the revision goes idle, and when to bring a pod back before the next
// request. It starts from the hybrid histogram policy of "Serverless in the
// Wild" (Shahrad et al., USENIX ATC 2020).
//
// A Policy records the revision's idle times (from the end of its last
// request to the arrival of the next) in a histogram of one-minute bins over
// four hours. In the paper's policy (PaperConfig), when the histogram is
// representative, the head of the distribution (5th percentile, less a 10%
// margin) is the pre-warm window: the revision may go without pods that long
// after it goes idle. The tail (99th percentile, plus a 10% margin) is where
// the keep-alive ends. When it is not (too few idle times, or counts spread
// so evenly over the bins that their coefficient of variation is under 2), a
// fixed keep-alive applies. When most idle times are beyond the histogram's
// range, the next idle time is forecast from recent ones and a window of
// ±15% around it is kept.
//
// Thaw's default (DefaultConfig) keeps the histogram, the fallback and the
// forecast but picks the pre-warm and keep-alive windows by cost instead of
// by percentiles: the window that, over the idle times seen, costs the least
// idle pod time plus a price per cold start, the price growing with how rare
// the revision's requests are. A 99th-percentile tail keeps a pod for hours
// after a busy revision's rare long pauses; the cost search does not, and
// spends that memory where a cold start is a large share of the requests.
//
// The state is small and fixed in size (one counter per bin and a few
// recent idle times), so a revision costs about a kilobyte whatever its
// traffic; it can be snapshotted and restored (State) to survive a restart
// or a hand-off. A Policy is pure: time comes from an injected clock, and it
// never touches Kubernetes. It is not safe for concurrent use.
//
// Two users run this same code: `thaw replay --simulate`
// (pkg/experiment/replay/sim) and the autoscaler's KPA (pkg/autoscaler/kpa), where it
// is off unless config-autoscaler's thaw-keep-alive or a Revision's
// annotation autoscaling.thaw.dev/keep-alive says learned (DefaultConfig)
// or hybrid (PaperConfig). The KPA writes each revision's Summary and State
// on its PodAutoscaler as the annotations
// autoscaling.thaw.dev/keep-alive-windows and
// autoscaling.thaw.dev/keep-alive-state.
package keepalive

import (
	"fmt"
	"math"
	"time"

	"k8s.io/utils/clock"
)

// Config parameterises a Policy. The zero value is not useful; start from
// DefaultConfig.
type Config struct {
	// BinWidth is the width of a histogram bin; Range the histogram's span
	// (a whole number of bins). Idle times at or past Range are out of
	// bounds.
	BinWidth, Range time.Duration
	// Head and Tail are the percentiles, in (0, 1), that set the pre-warm
	// window and the end of the keep-alive.
	Head, Tail float64
	// Margin widens the learned window: the head shrinks and the tail grows
	// by this fraction.
	Margin float64
	// MinSamples is the fewest in-range idle times the histogram is trusted
	// with.
	MinSamples int
	// CVThreshold is the least coefficient of variation of the bin counts at
	// which the histogram is representative.
	CVThreshold float64
	// OOBThreshold is the share of out-of-bounds idle times at which the
	// policy forecasts instead; OOBMargin is the forecast's margin.
	OOBThreshold, OOBMargin float64
	// Fallback is used while the histogram is not representative.
	Fallback Windows
	// ColdStartCost, when > 0, chooses the windows by cost instead of by
	// the head and tail percentiles: the pre-warm and keep-alive that, over
	// the idle times seen, minimise the pod time kept idle plus
	// ColdStartCost for each idle time that would have ended in a cold
	// start. It is the idle pod time one avoided cold start is worth.
	ColdStartCost time.Duration
	// ColdStartShare adds to the cost of a cold start this share of the
	// revision's mean time between requests (see Arrivals). The yardstick
	// is each revision's share of cold requests: a cold start weighs more
	// where requests are rare.
	ColdStartShare float64
	// MinHold is how long a pod stays after the revision goes idle whatever
	// the policy says (the stable window and grace period before scale to
	// zero); the cost objective counts idle times within it as warm.
	MinHold time.Duration
	// MinIdle is the shortest pause that counts as an idle time; a
	// shorter one continues the busy period. The autoscaler sees traffic
	// through per-second stats and calls a revision idle only after
	// StatQuiet without any, so a simulation that means to match it sets
	// MinIdle to StatQuiet. 0 records every pause.
	MinIdle time.Duration
	// HalveAt bounds the counts: when the idle times recorded reach it,
	// every count is halved, so that old behaviour fades and counters never
	// overflow. 0 means 1<<30.
	HalveAt uint32
}

// DefaultConfig is Thaw's policy: the paper's histogram and fallback,
// with the windows chosen by cost (see leastCost), a cold start weighing
// four mean times between the revision's requests, and no margin (the cost search
// already puts the window's edges on bin edges, the safe side of each bin).
// These settings were chosen on the Azure Functions 2019 sample with
// `thaw replay --simulate` (see its README section).
func DefaultConfig() Config {
	c := PaperConfig()
	c.ColdStartShare = DefaultColdStartShare
	c.Margin = 0
	return c
}

// DefaultColdStartShare is the default ColdStartShare.
const DefaultColdStartShare = 4

// PaperConfig is the paper's hybrid histogram policy. Its fallback, a fixed
// keep-alive of 10 minutes, stands in for the paper's "standard keep-alive".
func PaperConfig() Config {
	return Config{
		BinWidth:     time.Minute,
		Range:        4 * time.Hour,
		Head:         0.05,
		Tail:         0.99,
		Margin:       0.10,
		MinSamples:   5,
		CVThreshold:  2,
		OOBThreshold: 0.5,
		OOBMargin:    0.15,
		Fallback:     Windows{Mode: ModeFallback, KeepAlive: 10 * time.Minute},
		HalveAt:      10000,
	}
}

// Validate checks a Config.
func (c Config) Validate() error {
	switch {
	case c.BinWidth <= 0 || c.Range < c.BinWidth || c.Range%c.BinWidth != 0:
		return fmt.Errorf("keepalive: range %v must be a whole number (≥1) of bins of %v", c.Range, c.BinWidth)
	case c.Range/c.BinWidth > maxBins:
		return fmt.Errorf("keepalive: %d bins, at most %d", c.Range/c.BinWidth, maxBins)
	case !(c.Head > 0 && c.Head < c.Tail && c.Tail < 1):
		return fmt.Errorf("keepalive: want 0 < head %v < tail %v < 1", c.Head, c.Tail)
	case !(c.Margin >= 0 && c.Margin < 1) || !(c.OOBMargin >= 0 && c.OOBMargin < 1):
		return fmt.Errorf("keepalive: margins %v, %v: want [0, 1)", c.Margin, c.OOBMargin)
	case !(c.OOBThreshold > 0 && c.OOBThreshold <= 1):
		return fmt.Errorf("keepalive: out-of-bounds threshold %v: want (0, 1]", c.OOBThreshold)
	case c.MinSamples < 1 || c.CVThreshold < 0:
		return fmt.Errorf("keepalive: min samples %d, CV threshold %v", c.MinSamples, c.CVThreshold)
	case c.ColdStartCost < 0 || c.MinHold < 0 || c.ColdStartShare < 0 || c.MinIdle < 0:
		return fmt.Errorf("keepalive: cold-start cost %v, min hold %v, min idle %v: want ≥ 0", c.ColdStartCost, c.MinHold, c.MinIdle)
	case c.Fallback.PreWarm < 0 || c.Fallback.KeepAlive < 0:
		return fmt.Errorf("keepalive: negative fallback %+v", c.Fallback)
	}
	return nil
}

// StatQuiet is how long the autoscaler waits without a stat showing traffic
// before it calls a revision idle (stats come every second while there is
// traffic; two seconds let one go missing).
const StatQuiet = 2 * time.Second

// maxBins bounds the state of one revision.
const maxBins = 1440

// recentIdle is how many recent idle times the forecast uses.
const recentIdle = 8

// Mode says where a Windows came from.
type Mode uint8

// Modes.
const (
	// ModeFallback: the histogram is not representative yet.
	ModeFallback Mode = iota
	// ModeHistogram: head and tail percentiles of the histogram.
	ModeHistogram
	// ModeForecast: most idle times are out of bounds; forecast.
	ModeForecast
	// ModeCost: the windows of least cost over the histogram.
	ModeCost
)

func (m Mode) String() string {
	switch m {
	case ModeHistogram:
		return "histogram"
	case ModeForecast:
		return "forecast"
	case ModeCost:
		return "cost"
	default:
		return "fallback"
	}
}

// Windows is what the policy wants while a revision is idle, measured from
// the moment it went idle.
type Windows struct {
	Mode Mode
	// PreWarm is how long the revision may go without pods; a pod is wanted
	// from then on. 0: keep the pod from the start.
	PreWarm time.Duration
	// KeepAlive is how long a pod is wanted after PreWarm.
	KeepAlive time.Duration
}

// End is how long after going idle the policy stops wanting a pod.
func (w Windows) End() time.Duration { return w.PreWarm + w.KeepAlive }

// Policy is the keep-alive state of one revision.
type Policy struct {
	cfg Config
	clk clock.PassiveClock

	bins []uint32
	// n is the sum of bins; oob the out-of-bounds idle times.
	n, oob uint32
	// recent holds the last idle times, in milliseconds, oldest first
	// from head once full.
	recent  [recentIdle]int64
	nRecent int
	head    int

	busy      bool
	idleSince time.Time // zero: unknown (no request seen yet)
	// first is when the first request came (zero: none yet); with the
	// requests counted since, it gives how often the revision is used.
	first    time.Time
	requests uint64

	win   Windows
	dirty bool
}

// New returns a policy with no history.
func New(cfg Config, clk clock.PassiveClock) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HalveAt == 0 {
		cfg.HalveAt = 1 << 30
	}
	return &Policy{cfg: cfg, clk: clk, bins: make([]uint32, cfg.Range/cfg.BinWidth), dirty: true}, nil
}

// Busy notes that the revision has a request in flight from now on. Coming
// out of idleness, it records the idle time. Calls while busy do nothing.
func (p *Policy) Busy() {
	if p.busy {
		return
	}
	p.busy = true
	if p.first.IsZero() {
		p.first = p.clk.Now()
	}
	if p.idleSince.IsZero() {
		return
	}
	if d := p.clk.Since(p.idleSince); d >= p.cfg.MinIdle {
		p.record(d)
	}
}

// Arrivals notes n requests arriving now: the revision is busy (see Busy),
// and the requests count towards its rate of use. Without Arrivals, each
// busy period counts as one request.
func (p *Policy) Arrivals(n uint64) {
	if n == 0 {
		return
	}
	p.Busy()
	p.requests += n
}

// Idle notes that the revision has no request in flight from now on. Calls
// while idle do nothing.
func (p *Policy) Idle() { p.IdleAt(p.clk.Now()) }

// IdleAt is Idle dated back to t (never later than now): the autoscaler
// knows a revision went idle only a quiet period after its last request,
// and dates the idle period from that request.
func (p *Policy) IdleAt(t time.Time) {
	if !p.busy {
		return
	}
	p.busy = false
	if now := p.clk.Now(); t.IsZero() || t.After(now) {
		t = now
	}
	p.idleSince = t
}

// IsBusy reports whether the revision has a request in flight.
func (p *Policy) IsBusy() bool { return p.busy }

// IdleSince is when the revision went idle (zero while busy or before any
// request).
func (p *Policy) IdleSince() time.Time {
	if p.busy {
		return time.Time{}
	}
	return p.idleSince
}

func (p *Policy) record(d time.Duration) {
	d = max(d, 0)
	ms := d.Milliseconds()
	if p.nRecent < recentIdle {
		p.recent[p.nRecent] = ms
		p.nRecent++
	} else {
		p.recent[p.head] = ms
		p.head = (p.head + 1) % recentIdle
	}
	if i := int(d / p.cfg.BinWidth); i < len(p.bins) {
		p.bins[i]++
		p.n++
	} else {
		p.oob++
	}
	if p.n+p.oob >= p.cfg.HalveAt {
		p.n = 0
		for i := range p.bins {
			p.bins[i] /= 2
			p.n += p.bins[i]
		}
		p.oob /= 2
	}
	p.dirty = true
}

// Samples returns the in-range and out-of-bounds idle times counted.
func (p *Policy) Samples() (inRange, outOfBounds uint32) { return p.n, p.oob }

// Windows returns the windows the history gives now.
func (p *Policy) Windows() Windows {
	if p.dirty {
		p.win = p.compute()
		p.dirty = false
	}
	return p.win
}

func (p *Policy) compute() Windows {
	total := p.n + p.oob
	if total > 0 && float64(p.oob)/float64(total) >= p.cfg.OOBThreshold && p.nRecent > 0 {
		// Paper: ARIMA on the idle times. A mean of the recent ones is the
		// forecast here: out-of-bounds idle times are hours apart, so few
		// are ever seen, too few to fit a model to.
		var sum int64
		for _, v := range p.recent[:p.nRecent] {
			sum += v
		}
		pred := time.Duration(sum/int64(p.nRecent)) * time.Millisecond
		pre := time.Duration(float64(pred) * (1 - p.cfg.OOBMargin))
		return Windows{Mode: ModeForecast, PreWarm: pre, KeepAlive: time.Duration(float64(pred) * 2 * p.cfg.OOBMargin)}
	}
	if (p.cfg.ColdStartCost > 0 || p.cfg.ColdStartShare > 0) && int(p.n) >= p.cfg.MinSamples {
		return p.leastCost()
	}
	if int(p.n) < p.cfg.MinSamples || p.cv() < p.cfg.CVThreshold {
		w := p.cfg.Fallback
		w.Mode = ModeFallback
		return w
	}
	head, tail := p.percentileBin(p.cfg.Head), p.percentileBin(p.cfg.Tail)
	bw := float64(p.cfg.BinWidth)
	pre := time.Duration(float64(head) * bw * (1 - p.cfg.Margin))
	end := time.Duration(float64(tail+1) * bw * (1 + p.cfg.Margin))
	return Windows{Mode: ModeHistogram, PreWarm: pre, KeepAlive: end - pre}
}

// cv is the coefficient of variation of the bin counts: high when idle
// times concentrate in a few bins, near 0 when they spread evenly.
func (p *Policy) cv() float64 {
	nb := float64(len(p.bins))
	if p.n == 0 || len(p.bins) < 2 {
		return 0
	}
	mean := float64(p.n) / nb
	var ss float64
	for _, c := range p.bins {
		d := float64(c) - mean
		ss += d * d
	}
	return math.Sqrt(ss/(nb-1)) / mean
}

// percentileBin is the first bin at which the cumulative count reaches q of
// the in-range total.
func (p *Policy) percentileBin(q float64) int {
	want := q * float64(p.n)
	var cum float64
	for i, c := range p.bins {
		cum += float64(c)
		if cum >= want && c > 0 {
			return i
		}
	}
	return len(p.bins) - 1
}

// Plan is what the policy wants at one moment of an idle period.
type Plan struct {
	// Pod is true while the policy wants one pod kept (or brought back).
	Pod bool
	// Next is when that changes; zero when it never does.
	Next time.Time
	Windows
}

// Plan returns what the policy wants now. While the revision is busy it
// wants a pod (the decider says how many); before its first request it wants
// none.
func (p *Policy) Plan() Plan { return p.PlanAt(p.clk.Now()) }

// PlanAt is what the policy will want at now if nothing changes until then:
// an autoscaler asks for a pod start's time ahead, so that a pre-warmed pod
// is ready when the policy wants it.
func (p *Policy) PlanAt(now time.Time) Plan {
	w := p.Windows()
	switch {
	case p.busy:
		return Plan{Pod: true, Windows: w}
	case p.idleSince.IsZero():
		return Plan{Windows: w}
	}
	pre, end := p.idleSince.Add(w.PreWarm), p.idleSince.Add(w.End())
	switch {
	case now.Before(pre):
		return Plan{Pod: false, Next: pre, Windows: w}
	case now.Before(end):
		return Plan{Pod: true, Next: end, Windows: w}
	default:
		return Plan{Pod: false, Windows: w}
	}
}

// leastCost searches every window [P, E) on bin edges (P = 0 or a bin's
// start, E a later bin's end) for the least cost over the recorded idle
// times x. The pod is there anyway for the hold H after the revision goes
// idle; the window adds pod time from max(P, H) to min(x, E):
//
//	extra(x) = max(0, min(x, E) − max(P, H))   pod time the window adds
//	cold(x)  = H < x < P, or x ≥ E > H         no pod when the request came
//	cost     = Σ extra(x) + ColdStartCost × Σ cold(x)
//
// Keeping nothing beyond the hold is a candidate too. An in-range idle time
// counts at its bin's middle; an out-of-bounds one as longer than any E.
// With prefix sums each window costs O(1), so a search is O(bins²), about
// 30k steps for 240 bins.
func (p *Policy) leastCost() Windows {
	nb := len(p.bins)
	bw := p.cfg.BinWidth.Seconds()
	hold := p.cfg.MinHold.Seconds()
	c := p.cfg.ColdStartCost.Seconds()
	// cnt[i], sum[i]: count and Σ x of the bins before i.
	cnt := make([]float64, nb+1)
	sum := make([]float64, nb+1)
	for i, b := range p.bins {
		x := (float64(i) + 0.5) * bw
		cnt[i+1] = cnt[i] + float64(b)
		sum[i+1] = sum[i] + float64(b)*x
	}
	total := cnt[nb] + float64(p.oob)
	if p.cfg.ColdStartShare > 0 && !p.first.IsZero() && !p.idleSince.IsZero() {
		uses := float64(p.requests)
		if uses == 0 {
			uses = total
		}
		c += p.cfg.ColdStartShare * p.idleSince.Sub(p.first).Seconds() / uses
	}
	// h is the bin that holds the end of the hold: its idle times may
	// outlast the hold, so from it on they are cold unless a window keeps
	// a pod.
	h := min(int(hold/bw), nb)
	// Keeping nothing: every idle time past the hold is cold.
	bestCost, bestP, bestE := c*(total-cnt[h]), 0, 0
	for pi := 0; pi < nb; pi++ {
		P := float64(pi) * bw
		from := max(P, hold) // the window's pod time starts here
		s := max(pi, h)      // first bin whose idle times reach into it
		coldBefore := 0.
		if pi > h {
			coldBefore = cnt[pi] - cnt[h]
		}
		for ei := max(pi, h) + 1; ei <= nb; ei++ {
			E := float64(ei) * bw
			if E <= from {
				continue
			}
			in := cnt[ei] - cnt[s]
			extra := (sum[ei] - sum[s]) - in*from
			after := total - cnt[ei] // past E, out of bounds included
			extra += after * (E - from)
			cost := extra + c*(coldBefore+after)
			if cost < bestCost {
				bestCost, bestP, bestE = cost, pi, ei
			}
		}
	}
	if bestE == 0 {
		return Windows{Mode: ModeCost}
	}
	pre := time.Duration(float64(bestP) * bw * (1 - p.cfg.Margin) * float64(time.Second))
	end := time.Duration(float64(bestE) * bw * (1 + p.cfg.Margin) * float64(time.Second))
	return Windows{Mode: ModeCost, PreWarm: pre, KeepAlive: end - pre}
}
