package window

import (
	"math"
	"time"
)

// MaxGranularity is the slot width of the scale-down-delay max window: the
// decider ticks every 2 s, so one slot holds one decision.
const MaxGranularity = 2 * time.Second

// Max is a sliding maximum over the last N slots of MaxGranularity, used to
// hold scale-down decisions for the scale-down delay. Several values recorded
// in the same slot keep their maximum. Amortised O(1) per Record: a
// monotonically decreasing queue of (slot, value).
type Max struct {
	slot  []int64
	value []int32
	// head is the ring index of the oldest (and largest) entry; n is the
	// number of entries.
	head, n int
}

// NewMax returns a max window covering d, rounded up to whole slots.
func NewMax(d time.Duration) *Max {
	size := int(math.Ceil(float64(d) / float64(MaxGranularity)))
	if size < 1 {
		size = 1
	}
	return &Max{slot: make([]int64, size), value: make([]int32, size)}
}

// at maps the i-th entry to its ring index (i < len, so one wrap at most;
// cheaper than a modulo on the hot path).
func (m *Max) at(i int) int {
	j := m.head + i
	if j >= len(m.slot) {
		j -= len(m.slot)
	}
	return j
}

// Record adds v at time now.
func (m *Max) Record(now time.Time, v int32) {
	s := now.Unix() / int64(MaxGranularity/time.Second)
	// Entries not larger than v can never be the maximum again: v is newer.
	for m.n > 0 && m.value[m.at(m.n-1)] <= v {
		m.n--
	}
	// Entries that slid out of the window.
	size := int64(len(m.slot))
	for m.n > 0 && s-m.slot[m.head] >= size {
		m.head++
		if m.head == len(m.slot) {
			m.head = 0
		}
		m.n--
	}
	// One entry per slot: merge with a larger value already in this slot.
	if m.n > 0 {
		if last := m.at(m.n - 1); m.slot[last] == s {
			v = max(v, m.value[last])
			m.n--
		}
	}
	i := m.at(m.n)
	m.slot[i], m.value[i] = s, v
	m.n++
}

// Current returns the maximum within the window as of the last Record
// (0 before any Record).
func (m *Max) Current() int32 {
	return m.value[m.head]
}
