package keepalive

import (
	"errors"
	"fmt"
	"time"
)

// stateVersion is the layout of State; Restore refuses others.
const stateVersion = 1

// State is a Policy's history in a form to persist or hand off: a few
// hundred bytes of JSON for a revision with traffic, bounded by the number of
// bins whatever the traffic.
type State struct {
	Version int `json:"v"`
	// BinSeconds and Bins describe the histogram it was taken from; Restore
	// needs the same bin width and no more bins than the policy has.
	BinSeconds int64 `json:"binSeconds"`
	// Counts are the non-empty bins as [bin, count] pairs.
	Counts [][2]uint32 `json:"counts,omitempty"`
	OOB    uint32      `json:"oob,omitempty"`
	// RecentMs are the last idle times, oldest first.
	RecentMs []int64 `json:"recentMs,omitempty"`
	Busy     bool    `json:"busy,omitempty"`
	// IdleSinceUnixMs is when the revision went idle (0: unknown).
	IdleSinceUnixMs int64 `json:"idleSinceUnixMs,omitempty"`
	// FirstUnixMs is when its first request came (0: none yet).
	FirstUnixMs int64 `json:"firstUnixMs,omitempty"`
	// Requests counts the requests since then.
	Requests uint64 `json:"requests,omitempty"`
}

// Snapshot returns the policy's state.
func (p *Policy) Snapshot() State {
	s := State{Version: stateVersion, BinSeconds: int64(p.cfg.BinWidth / time.Second), OOB: p.oob, Busy: p.busy,
		Requests: p.requests}
	for i, c := range p.bins {
		if c > 0 {
			s.Counts = append(s.Counts, [2]uint32{uint32(i), c})
		}
	}
	for i := range p.nRecent {
		s.RecentMs = append(s.RecentMs, p.recent[(p.head+i)%recentIdle])
	}
	if !p.idleSince.IsZero() {
		s.IdleSinceUnixMs = p.idleSince.UnixMilli()
	}
	if !p.first.IsZero() {
		s.FirstUnixMs = p.first.UnixMilli()
	}
	return s
}

// Restore replaces the policy's history with s. On error the policy is
// unchanged.
func (p *Policy) Restore(s State) error {
	if s.Version != stateVersion {
		return fmt.Errorf("keepalive: state version %d, want %d", s.Version, stateVersion)
	}
	if time.Duration(s.BinSeconds)*time.Second != p.cfg.BinWidth {
		return fmt.Errorf("keepalive: state has bins of %ds, the policy %v", s.BinSeconds, p.cfg.BinWidth)
	}
	if len(s.RecentMs) > recentIdle {
		return fmt.Errorf("keepalive: %d recent idle times, at most %d", len(s.RecentMs), recentIdle)
	}
	bins := make([]uint32, len(p.bins))
	var n uint64
	for _, bc := range s.Counts {
		if int(bc[0]) >= len(bins) {
			return fmt.Errorf("keepalive: state bin %d beyond the %d bins", bc[0], len(bins))
		}
		if bins[bc[0]] != 0 {
			return fmt.Errorf("keepalive: state bin %d twice", bc[0])
		}
		bins[bc[0]] = bc[1]
		n += uint64(bc[1])
	}
	if n+uint64(s.OOB) > 1<<31 {
		return errors.New("keepalive: state counts overflow")
	}
	for _, v := range s.RecentMs {
		if v < 0 {
			return fmt.Errorf("keepalive: negative recent idle time %d", v)
		}
	}
	p.bins, p.n, p.oob = bins, uint32(n), s.OOB
	p.recent = [recentIdle]int64{}
	p.nRecent, p.head = copy(p.recent[:], s.RecentMs), 0
	p.busy = s.Busy
	p.idleSince = time.Time{}
	if s.IdleSinceUnixMs != 0 {
		p.idleSince = time.UnixMilli(s.IdleSinceUnixMs)
	}
	p.requests = s.Requests
	p.first = time.Time{}
	if s.FirstUnixMs != 0 {
		p.first = time.UnixMilli(s.FirstUnixMs)
	}
	p.dirty = true
	return nil
}

// TimeScaled is c for traffic replayed s times faster than real time (a
// trace replay with --speed s): the histogram's bins and range, the
// fallback windows and ColdStartCost shrink by s, so that the policy makes
// on the compressed clock the decisions it makes on the trace's. MinHold
// and MinIdle are wall-clock times (the cluster's stable window and grace,
// its stat resolution) and stay. s must divide the bin width into whole
// seconds, so that the state keeps its layout (for 1-minute bins: a divisor
// of 60).
func (c Config) TimeScaled(s int) (Config, error) {
	if s < 1 || c.BinWidth%(time.Duration(s)*time.Second) != 0 {
		return c, fmt.Errorf("keepalive: time scale %d: want an integer ≥ 1 dividing the bin width %v into whole seconds", s, c.BinWidth)
	}
	d := time.Duration(s)
	c.BinWidth /= d
	c.Range /= d
	c.Fallback.PreWarm /= d
	c.Fallback.KeepAlive /= d
	c.ColdStartCost /= d
	return c, c.Validate()
}
