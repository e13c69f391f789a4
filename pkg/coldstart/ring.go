package coldstart

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// ScaleRecord is one cold start as the autoscaler saw it.
type ScaleRecord struct {
	Namespace string `json:"namespace"`
	Revision  string `json:"revision"`
	// PokeReceived: the stat that poked a revision at desired scale 0
	// reached the deciders.
	PokeReceived time.Time `json:"pokeReceived"`
	// Decided: the decider first returned desired > 0.
	Decided time.Time `json:"decided"`
	// ScaleWritten: the /scale patch from 0 to DesiredScale returned OK.
	ScaleWritten time.Time `json:"scaleWritten"`
	DesiredScale int32     `json:"desiredScale"`
	// PacedSeconds is how long the scale from zero waited for the
	// cluster's pod-start capacity (pkg/autoscaler/pacer) between the decision and
	// the patch; absent when it did not wait.
	PacedSeconds float64 `json:"pacedSeconds,omitempty"`
}

// DefaultRingSize is how many records the autoscaler keeps.
const DefaultRingSize = 1024

// Ring keeps the last records, oldest overwritten first. It is safe for
// concurrent use and serves its records as a JSON array, oldest first.
type Ring struct {
	mu   sync.Mutex
	buf  []ScaleRecord
	next int // where the next record goes
	full bool
}

// NewRing returns a Ring of capacity size (DefaultRingSize when ≤ 0).
func NewRing(size int) *Ring {
	if size <= 0 {
		size = DefaultRingSize
	}
	return &Ring{buf: make([]ScaleRecord, size)}
}

// Add appends rec, dropping the oldest record when full.
func (r *Ring) Add(rec ScaleRecord) {
	r.mu.Lock()
	r.buf[r.next] = rec
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// Snapshot returns the records, oldest first.
func (r *Ring) Snapshot() []ScaleRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		// Never nil, so an empty ring serves [] rather than null.
		return append(make([]ScaleRecord, 0, r.next), r.buf[:r.next]...)
	}
	out := make([]ScaleRecord, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// ServeHTTP answers GET (and HEAD) with the records as a JSON array.
func (r *Ring) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := json.Marshal(r.Snapshot())
	if err != nil {
		// Only plain values are marshalled; this cannot happen.
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}
