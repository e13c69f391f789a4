package throttler

import (
	"context"
	"sync"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Throttler holds the per-revision throttlers of one activator.
type Throttler struct {
	podIP  string
	opts   Options
	clk    clock.WithTicker
	logger *zap.SugaredLogger

	mu   sync.RWMutex
	revs map[types.NamespacedName]struct{}
}

// New returns a Throttler for the activator with the given pod IP.
func New(podIP string, opts Options, clk clock.WithTicker, logger *zap.SugaredLogger) *Throttler {
	return &Throttler{podIP: podIP, opts: opts, clk: clk, logger: logger, revs: map[types.NamespacedName]struct{}{}}
}

// Try waits for capacity, then calls fn with a destination "ip:port". If fn
// returns an error wrapping ErrRetryable, Try retries fn on another pod.
func (t *Throttler) Try(ctx context.Context, rev types.NamespacedName, fn func(dest string) error) error {
	return ErrRevisionDeleted
}

// UpsertRevision creates or reconfigures a revision.
func (t *Throttler) UpsertRevision(rev types.NamespacedName, cfg RevisionConfig) {}

// UpdateBackends sets the healthy destinations of a revision.
func (t *Throttler) UpdateBackends(rev types.NamespacedName, b Backends) {}

// UpdateActivators sets the activator IPs from the revision's public Endpoints.
func (t *Throttler) UpdateActivators(rev types.NamespacedName, activatorIPs []string) {}

// DeleteRevision ends all waiters of rev with ErrRevisionDeleted.
func (t *Throttler) DeleteRevision(rev types.NamespacedName) {}

// Stats returns the number of queued and in-flight requests of rev.
func (t *Throttler) Stats(rev types.NamespacedName) (queued, active int) { return 0, 0 }
