// Package throttler limits, queues and load-balances requests to the pods of
// each revision: capacity = containerConcurrency × pods assigned to this
// activator, a bounded FIFO queue per revision (and across revisions, each
// revision held to its fair share of the activator-wide bound), and
// a per-pod in-flight ramp for unlimited (CC=0) revisions.
//
// Use from the request path:
//
//	th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: cc}) // cheap when unchanged
//	err := th.Try(ctx, rev, func(dest string) error { return proxy(dest) })
//
// Errors for the handler to map: ErrQueueFull (503 with Retry-After),
// ErrRevisionDeleted (the revision is gone or unknown), ctx.Err() (timeout
// or client gone), and errors wrapping ErrRetryable when every retry was
// refused (502). Any other error is fn's own. Endpoint watchers feed
// UpdateBackends and UpdateActivators; the Revision informer feeds
// UpsertRevision and DeleteRevision.
package throttler

import (
	"errors"
	"time"
)

var (
	// ErrQueueFull is returned at once when the revision's queue is at its
	// bound; handlers answer 503 with Retry-After.
	ErrQueueFull = errors.New("throttler: revision queue is full")
	// ErrRevisionDeleted is returned to waiters of a deleted revision and to
	// any Try for it until UpsertRevision is called again.
	ErrRevisionDeleted = errors.New("throttler: revision deleted")
	// ErrRetryable is wrapped by fn when the request never reached the pod
	// (e.g. connection refused before any byte was sent); Try then retries on
	// another pod.
	ErrRetryable = errors.New("throttler: retryable: request did not reach the pod")
)

// Defaults for Options fields left zero.
const (
	// DefaultQueueDepth bounds waiters per revision. Upstream nominally uses
	// 10000 but adds MaxInt32, which makes it unbounded (#13583). 10000
	// keeps every burst that upstream buffered in practice, while
	// DefaultTotalQueueDepth bounds the sum.
	DefaultQueueDepth = 10000
	// DefaultTotalQueueDepth bounds waiters across all revisions. A waiting
	// request costs the activator about 20 KiB (its goroutine stack, bufio
	// buffers, the request and headers; the throttler's own share is under
	// 100 bytes), so 20000 waiters stay near 400 MiB, inside upstream's
	// 600 MiB activator limit, however many revisions start cold at once.
	DefaultTotalQueueDepth = 20000
	// DefaultMaxRetries bounds retries of one request on ErrRetryable.
	DefaultMaxRetries = 3
	// DefaultSuspectFor is how long a pod that refused a connection gets no
	// new requests while other pods are available.
	DefaultSuspectFor = time.Second
	// DefaultInitialPodConcurrency is the starting per-pod in-flight cap for
	// CC=0 revisions (see ramp.go).
	DefaultInitialPodConcurrency = 10
	// DefaultMaxPodConcurrency caps the CC=0 ramp; beyond it a pod is
	// treated as unlimited.
	DefaultMaxPodConcurrency = 1000
	// DefaultRampInterval is how often the CC=0 per-pod cap at least
	// doubles even without completions, so long-lived requests (websockets,
	// streams) cannot pin a pod at its initial cap.
	DefaultRampInterval = time.Second
)

// Options configure a Throttler. Zero values select the defaults above.
type Options struct {
	// QueueDepth is the default bound of waiting requests per revision.
	QueueDepth int
	// TotalQueueDepth bounds waiting requests across all revisions. With n
	// revisions queuing, each may hold at most TotalQueueDepth/(n+1) of
	// them, so a saturated revision cannot take another's share.
	TotalQueueDepth int
	// MaxRetries bounds how often one request is retried after ErrRetryable;
	// negative disables retries.
	MaxRetries int
	// SuspectFor is how long a pod that returned ErrRetryable is avoided.
	SuspectFor time.Duration
	// InitialPodConcurrency is the initial per-pod in-flight cap at CC=0.
	InitialPodConcurrency int
	// MaxPodConcurrency is where the CC=0 ramp stops limiting a pod.
	MaxPodConcurrency int
	// RampInterval is the period over which the CC=0 per-pod cap doubles
	// with time alone.
	RampInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.QueueDepth <= 0 {
		o.QueueDepth = DefaultQueueDepth
	}
	if o.TotalQueueDepth <= 0 {
		o.TotalQueueDepth = DefaultTotalQueueDepth
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	if o.SuspectFor <= 0 {
		o.SuspectFor = DefaultSuspectFor
	}
	if o.InitialPodConcurrency <= 0 {
		o.InitialPodConcurrency = DefaultInitialPodConcurrency
	}
	if o.MaxPodConcurrency <= 0 {
		o.MaxPodConcurrency = DefaultMaxPodConcurrency
	}
	if o.MaxPodConcurrency < o.InitialPodConcurrency {
		o.MaxPodConcurrency = o.InitialPodConcurrency
	}
	if o.RampInterval <= 0 {
		o.RampInterval = DefaultRampInterval
	}
	return o
}

// RevisionConfig is the per-revision configuration.
type RevisionConfig struct {
	// ContainerConcurrency is the revision's CC; 0 means unlimited.
	ContainerConcurrency int
	// QueueDepth bounds waiting requests; 0 selects Options.QueueDepth.
	QueueDepth int
}

// Backends are the routable destinations of a revision.
type Backends struct {
	// Dests are healthy pod addresses "ip:port".
	Dests []string
	// ClusterIPDest is the private service "ip:port" used when pods are not
	// directly addressable (mesh); "" if none. When set, every request goes
	// to it and Dests only count the ready pods behind it (as upstream), for
	// capacity max(1, CC×len(Dests)/activators); an empty Dests then counts
	// as one pod, since the ClusterIP passed a probe.
	ClusterIPDest string
}
