// Package report turns cold-start samples into phases, percentile tables, CSV/JSON files and a plot.
// It knows nothing about clusters: the runner fills Samples, this package only reads them.
package report

import "time"

// Sample is one cold start, every instant on the host's clock (the lab's daemons and pods share it).
// A zero time means the source had no value.
type Sample struct {
	Side     string `json:"side"`  // "upstream", "thaw", or the label of the components found
	Level    int    `json:"level"` // services fired at once
	Round    int    `json:"round"` // round number within the level
	Service  string `json:"service"`
	Revision string `json:"revision"`
	Pod      string `json:"pod,omitempty"`
	Status   int    `json:"status"`
	Error    string `json:"error,omitempty"`

	Send time.Time `json:"send"` // client: just before the request is written
	// Scale is when the apiserver completed the write that took the Deployment's replicas from 0
	// (audit stageTimestamp), or when a watch saw it (ScaleSource says which).
	Scale         time.Time `json:"scale"`
	ScaleReceived time.Time `json:"scaleReceived,omitzero"` // audit requestReceivedTimestamp
	ScaleSource   string    `json:"scaleSource,omitempty"`  // "audit" or "watch"
	QPUp          time.Time `json:"qpUp"`                   // first line of the queue-proxy container's log
	PodReady      time.Time `json:"podReady"`               // a pod watch saw Ready=True
	FirstByte     time.Time `json:"firstByte"`              // client: first response byte

	// Thaw's own timeline, when its activator answered the opt-in header and its autoscaler served
	// /debug/coldstarts. Nil for upstream.
	Thaw *ThawTimes `json:"thaw,omitempty"`
}

// ThawTimes are Thaw's internal instants for one cold start.
type ThawTimes struct {
	Header       string    `json:"header,omitempty"` // the raw response header
	Warm         bool      `json:"warm,omitempty"`   // the activator had a pod already
	Arrival      time.Time `json:"arrival,omitzero"`
	PokeSent     time.Time `json:"pokeSent,omitzero"`
	PokeReceived time.Time `json:"pokeReceived,omitzero"`
	Decided      time.Time `json:"decided,omitzero"`
	ScaleWritten time.Time `json:"scaleWritten,omitzero"`
	PodReady     time.Time `json:"podReady,omitzero"` // the activator's probe passed
	FirstByte    time.Time `json:"firstByte,omitzero"`
	Pod          string    `json:"pod,omitempty"` // ip:port the activator sent the request to
}

// OK tells whether the cold start answered 200.
func (s *Sample) OK() bool { return s.Error == "" && s.Status == 200 }
