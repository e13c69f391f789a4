package collector

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// MaxSnapshotRevisions bounds a snapshot taken in from another replica.
const MaxSnapshotRevisions = 20_000

// Second is one second of a revision's windows: the sums of concurrency and of requests per second
// recorded in it (proxied values already subtracted).
type Second struct {
	Sec         int64   `json:"s"`
	Concurrency float64 `json:"c"`
	RPS         float64 `json:"r"`
}

// RevisionSnapshot is the content of one revision's stable window.
type RevisionSnapshot struct {
	Namespace string   `json:"ns"`
	Name      string   `json:"n"`
	Seconds   []Second `json:"sec"`
}

// Snapshot copies every collection's stable window (the panic window is its newest part), so that a
// replica that starts or restarts can begin from another's view instead of empty windows.
func (c *Collector) Snapshot() []RevisionSnapshot {
	c.mu.RLock()
	cols := make(map[types.NamespacedName]*collection, len(c.revs))
	for k, col := range c.revs {
		cols[k] = col
	}
	c.mu.RUnlock()
	out := make([]RevisionSnapshot, 0, len(cols))
	for k, col := range cols {
		rs := RevisionSnapshot{Namespace: k.Namespace, Name: k.Name}
		col.mu.Lock()
		col.conc.Each(func(sec int64, v float64) { rs.Seconds = append(rs.Seconds, Second{Sec: sec, Concurrency: v}) })
		i := 0
		col.rps.Each(func(sec int64, v float64) {
			for i < len(rs.Seconds) && rs.Seconds[i].Sec < sec {
				i++
			}
			if i < len(rs.Seconds) && rs.Seconds[i].Sec == sec {
				rs.Seconds[i].RPS = v
			}
		})
		col.mu.Unlock()
		if len(rs.Seconds) > 0 {
			out = append(out, rs)
		}
	}
	return out
}

// Seed takes in another replica's snapshot. A second is recorded only where this replica has no live
// data yet (older than its first live stat of that revision), so nothing is counted twice. Revisions
// without a collection yet keep their seconds until theirs is created (the Metric reconciler may not
// have run yet), for at most the window's length.
func (c *Collector) Seed(snap []RevisionSnapshot) (seeded int) {
	if len(snap) > MaxSnapshotRevisions {
		snap = snap[:MaxSnapshotRevisions]
	}
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range snap {
		key := types.NamespacedName{Namespace: rs.Namespace, Name: rs.Name}
		if col := c.revs[key]; col != nil {
			col.mu.Lock()
			col.seed(rs.Seconds, now)
			col.mu.Unlock()
			seeded++
			continue
		}
		if c.pending == nil {
			c.pending = map[types.NamespacedName]pendingSeed{}
		}
		c.pending[key] = pendingSeed{seconds: rs.Seconds, until: now.Add(pendingSeedTTL)}
	}
	return seeded
}

// pendingSeedTTL bounds how long seconds wait for their revision's collection.
const pendingSeedTTL = 2 * time.Minute

type pendingSeed struct {
	seconds []Second
	until   time.Time
}

// takePending returns and forgets the pending seed of key, and drops expired ones. c.mu is held.
func (c *Collector) takePending(key types.NamespacedName, now time.Time) []Second {
	if len(c.pending) == 0 {
		return nil
	}
	p, ok := c.pending[key]
	delete(c.pending, key)
	for k, v := range c.pending {
		if now.After(v.until) {
			delete(c.pending, k)
		}
	}
	if !ok || now.After(p.until) {
		return nil
	}
	return p.seconds
}

// seed records seconds older than the collection's first live write and newer than any seeded
// before, and remembers the newest, so that no stat of those seconds is recorded again. A second past
// now (a peer's clock ahead of this one) is not taken: it would hold back this replica's own stats.
// col.mu is held.
func (col *collection) seed(secs []Second, now time.Time) {
	for _, s := range secs {
		if (col.liveFrom != 0 && s.Sec >= col.liveFrom) || (col.seededThrough != 0 && s.Sec <= col.seededThrough) ||
			s.Sec > now.Unix() {
			continue
		}
		t := time.Unix(s.Sec, 0)
		col.conc.Record(t, s.Concurrency)
		col.concPnc.Record(t, s.Concurrency)
		col.rps.Record(t, s.RPS)
		col.rpsPnc.Record(t, s.RPS)
		col.seededThrough = max(col.seededThrough, s.Sec)
	}
}
