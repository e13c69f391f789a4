package keepalive

// Summary is what a policy learned, for people and tools: the autoscaler
// writes it as JSON on the PodAutoscaler and `thaw replay` reads it back.
type Summary struct {
	// Mode is where the windows came from (fallback, histogram, forecast,
	// cost).
	Mode string `json:"mode"`
	// PreWarmSeconds is how long after going idle the revision may be
	// without pods; KeepAliveSeconds how long a pod is wanted after that.
	PreWarmSeconds   float64 `json:"preWarmSeconds"`
	KeepAliveSeconds float64 `json:"keepAliveSeconds"`
	// IdleTimes and OutOfBounds count the idle times recorded within and
	// beyond the histogram's range (halved now and then, see HalveAt).
	IdleTimes   uint32 `json:"idleTimes"`
	OutOfBounds uint32 `json:"outOfBounds,omitempty"`
}

// Summary returns the policy's current windows and counts.
func (p *Policy) Summary() Summary {
	w := p.Windows()
	return Summary{Mode: w.Mode.String(), PreWarmSeconds: w.PreWarm.Seconds(), KeepAliveSeconds: w.KeepAlive.Seconds(),
		IdleTimes: p.n, OutOfBounds: p.oob}
}
