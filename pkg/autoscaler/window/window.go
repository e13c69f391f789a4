// Package window holds per-second metric buckets and the window averages the
// autoscaler decides on: a linear average and a weighted-exponential average.
//
// The results match Knative Serving's aggregation buckets bit for bit: the same
// valid-bucket counting, the same floating-point operations in the same order
// and the same 6-digit rounding of the linear average. Keeping the order of
// operations identical matters because the decider takes ceilings of these
// values; a last-bit difference could change a pod count.
//
// Windows are not safe for concurrent use; the owner (the collector) guards a
// revision's windows with one lock.
package window

import (
	"math"
	"time"
)

const (
	// Granularity is the width of one bucket.
	Granularity = time.Second

	// precision is the number of decimal digits the linear average keeps.
	precision = 6
	// minSmoothing bounds the EMA coefficient below so that very long windows
	// do not degenerate into a plain average.
	minSmoothing = 0.2
	// weightPrecision is the share of the total weight the window's buckets
	// must cover.
	weightPrecision = 0.9999

	// never marks a write time that has not happened. It is far enough in the
	// past that differences to real times do not overflow int64 seconds.
	never = math.MinInt64 / 4
)

// Buckets is a ring of per-second sums over a window. The zero value is not
// usable; use NewLinear or NewWeighted.
type Buckets struct {
	buckets []float64
	window  time.Duration
	// total is the sum of every bucket, including ones outside the valid
	// range; the linear average subtracts the stale ones when reading.
	total float64
	// first and last are the unix seconds of the first write of the current
	// run of data and of the newest write; never when unset.
	first, last int64
	// lastIdx is the ring index of last, so that the hot paths step through
	// the ring instead of dividing.
	lastIdx int

	weighted bool
	// coeff is the EMA smoothing coefficient (weighted only).
	coeff float64
}

// NewLinear returns buckets averaging linearly over window.
func NewLinear(window time.Duration) *Buckets {
	return newBuckets(window, false)
}

// NewWeighted returns buckets computing a weighted-exponential average over
// window, newest bucket weighted highest.
func NewWeighted(window time.Duration) *Buckets {
	return newBuckets(window, true)
}

func newBuckets(window time.Duration, weighted bool) *Buckets {
	n := numBuckets(window)
	b := &Buckets{
		buckets:  make([]float64, n),
		window:   window,
		first:    never,
		last:     never,
		weighted: weighted,
	}
	if weighted {
		b.coeff = smoothing(n)
	}
	return b
}

// numBuckets is ceil(window/granularity), at least 1 so that a nonsensical
// window cannot make the ring empty.
func numBuckets(window time.Duration) int {
	n := int(math.Ceil(float64(window) / float64(Granularity)))
	if n < 1 {
		n = 1
	}
	return n
}

// smoothing returns the EMA coefficient for n buckets: the value at which n
// buckets carry weightPrecision of the total weight, but at least minSmoothing.
func smoothing(n int) float64 {
	return math.Max(1-math.Pow(1-weightPrecision, 1/float64(n)), minSmoothing)
}

// Weighted reports whether b computes the weighted-exponential average.
func (b *Buckets) Weighted() bool { return b.weighted }

// Window returns the current window length.
func (b *Buckets) Window() time.Duration { return b.window }

// sinceSec converts a difference of unix seconds into a Duration, saturating
// instead of overflowing (as time.Time.Sub does).
func sinceSec(d int64) time.Duration {
	const maxSec = math.MaxInt64 / int64(time.Second)
	switch {
	case d > maxSec:
		return math.MaxInt64
	case d < -maxSec:
		return math.MinInt64
	}
	return time.Duration(d) * time.Second
}

// sub returns a−b saturated to the int64 range, so that absurd timestamps
// (a garbage stat dated in year −292 billion) cannot wrap around.
func sub(a, b int64) int64 {
	d := a - b
	if (b < 0 && d < a) || (b > 0 && d > a) {
		if b < 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return d
}

// unixSec returns t in unix seconds, clamped inside the range the buckets
// represent (never is reserved).
func unixSec(t time.Time) int64 {
	return min(max(t.Unix(), never+1), -(never + 1))
}

// span is lastWrite−firstWrite in whole buckets, saturated like time.Time.Sub
// when the first write is unset.
func (b *Buckets) span() int64 {
	if b.first == never {
		return math.MaxInt64 / int64(time.Second)
	}
	return int64(sinceSec(b.last-b.first) / Granularity)
}

func (b *Buckets) idx(sec int64) int {
	n := int64(len(b.buckets))
	i := sec % n
	if i < 0 {
		i += n
	}
	return int(i)
}

// Record adds value to the bucket of second t. Seconds skipped since the last
// write are zeroed; after a full window without writes the window restarts.
// A value older than the window relative to the newest write is ignored.
func (b *Buckets) Record(t time.Time, value float64) {
	sec := unixSec(t)
	switch {
	case b.last == sec:
		// The common case: several stats within one second.
	case b.last == never || sinceSec(sub(sec, b.last)) >= b.window:
		// The first write, or a whole window without writes: start afresh.
		b.first = sec
		clear(b.buckets)
		b.total = 0
		b.last, b.lastIdx = sec, b.idx(sec)
	case sec > b.last:
		// Zero the seconds skipped since the last write.
		j := b.lastIdx
		for i := b.last + 1; i <= sec; i++ {
			if j++; j == len(b.buckets) {
				j = 0
			}
			b.total -= b.buckets[j]
			b.buckets[j] = 0
		}
		if b.first == never || b.first > sec {
			// Unset after a resize that found no recent data.
			b.first = sec
		}
		b.last, b.lastIdx = sec, j
	case sinceSec(sub(b.last, sec)) >= b.window:
		return // older than the window: it can never be read
	default:
		// A late value within the window.
		if b.first == never || b.first > sec {
			b.first = sec
		}
		j := b.idx(sec)
		b.buckets[j] += value
		b.total += value
		return
	}
	b.buckets[b.lastIdx] += value
	b.total += value
}

// IsEmpty reports whether nothing was written within the window before now.
func (b *Buckets) IsEmpty(now time.Time) bool {
	return b.IsEmptySec(unixSec(now))
}

// Average returns the window average as of now, linear or weighted according
// to how b was built.
func (b *Buckets) Average(now time.Time) float64 {
	if b.weighted {
		return b.weightedAverage(unixSec(now))
	}
	return b.linearAverage(unixSec(now))
}

// linearAverage divides the sum of the valid buckets by their number: at most
// the buckets since the first write, excluding the empty seconds after the
// last write.
func (b *Buckets) linearAverage(now int64) float64 {
	if b.last == never {
		return 0
	}
	d := sinceSec(sub(now, b.last))
	switch {
	case d <= 0:
		n := math.Min(float64(b.span())+1, float64(len(b.buckets)))
		return round(b.total / n)
	case d < b.window:
		sum := b.total
		j := b.lastIdx
		for i := b.last + 1; i <= now; i++ {
			if j++; j == len(b.buckets) {
				j = 0
			}
			sum -= b.buckets[j]
		}
		n := math.Min(float64(b.span())+1, float64(len(b.buckets)-int(now-b.last)))
		return round(sum / n)
	default:
		return 0
	}
}

// weightedAverage is the newest-first EMA over the ring; the empty seconds
// since the last write are skipped in one step by (1−α)^gap.
func (b *Buckets) weightedAverage(now int64) float64 {
	if b.IsEmptySec(now) {
		return 0
	}
	n := len(b.buckets)
	m := b.coeff
	if now > b.last {
		gap := now - b.last
		m *= math.Pow(1-b.coeff, float64(gap))
		n -= int(gap)
	}
	ret := 0.
	decay := 1 - b.coeff
	j := b.lastIdx
	for range n {
		v := b.buckets[j] * m
		ret += v
		m *= decay
		if j--; j < 0 {
			j = len(b.buckets) - 1
		}
	}
	return ret
}

// IsEmptySec is IsEmpty for a time given in unix seconds.
func (b *Buckets) IsEmptySec(now int64) bool {
	return b.last == never || sinceSec(sub(now, b.last)) > b.window
}

// Resize changes the window, keeping the newest data that fits when data was
// written within the old window before now. O(window); meant for rare
// configuration changes.
func (b *Buckets) Resize(now time.Time, window time.Duration) {
	if window == b.window {
		return
	}
	n := numBuckets(window)
	nb := make([]float64, n)
	total := 0.
	if b.last != never && sinceSec(sub(unixSec(now), b.last)) <= b.window {
		old := len(b.buckets)
		sec := b.last
		for range min(n, old) {
			v := b.buckets[b.idx(sec)]
			j := sec % int64(n)
			if j < 0 {
				j += int64(n)
			}
			nb[j] = v
			total += v
			sec--
		}
		// The earliest time data may have been written within the old ring.
		b.first = b.last - int64(old-1)
	} else {
		b.first = never
	}
	b.window = window
	b.buckets = nb
	b.total = total
	if b.last != never {
		b.lastIdx = b.idx(b.last)
	}
	if b.weighted {
		b.coeff = smoothing(n)
	}
}

func round(f float64) float64 {
	p := math.Pow10(precision)
	return math.Round(f*p) / p
}

// Each calls fn for every second of the current run of data inside the window, oldest first, with its
// sum (0 for a second without writes). It is how a window is copied to another replica: recording
// the same values into empty buckets gives the same averages.
func (b *Buckets) Each(fn func(sec int64, value float64)) {
	if b.last == never {
		return
	}
	from := max(b.first, b.last-int64(len(b.buckets))+1)
	for sec := from; sec <= b.last; sec++ {
		fn(sec, b.buckets[b.idx(sec)])
	}
}
