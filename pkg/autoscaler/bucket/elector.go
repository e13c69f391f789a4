package bucket

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Elector campaigns for every bucket's Lease at once, each with its own client-go elector, so one
// replica may hold several buckets and a fleet spreads them. Holding a bucket starts when its Lease
// is acquired and ends when it is lost or the elector stops; the process goes on either way and
// campaigns again, so ownership moves without restarts.
type Elector struct {
	Kube      kubernetes.Interface
	Namespace string
	Identity  string
	Set       *Set
	Config    Config
	// Promote is called when a bucket is acquired, with a context that ends when it is lost; it must
	// not block. Demote is called after the bucket is no longer owned.
	Promote func(ctx context.Context, bucket string)
	Demote  func(bucket string)
	Logger  *zap.SugaredLogger

	mu    sync.RWMutex
	owned map[string]bool
}

// Owns reports whether this replica holds the bucket of key.
func (e *Elector) Owns(key types.NamespacedName) bool { return e.OwnsBucket(e.Set.Owner(key)) }

// OwnsBucket reports whether this replica holds the named bucket.
func (e *Elector) OwnsBucket(name string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.owned[name]
}

// Owned lists the buckets held now, sorted.
func (e *Elector) Owned() []string {
	e.mu.RLock()
	out := make([]string, 0, len(e.owned))
	for b := range e.owned {
		out = append(out, b)
	}
	e.mu.RUnlock()
	sort.Strings(out)
	return out
}

// Run campaigns until ctx ends, then releases the Leases it holds (ReleaseOnCancel), so that another
// replica takes over at once rather than after the lease duration.
func (e *Elector) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.owned == nil {
		e.owned = map[string]bool{}
	}
	e.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, len(e.Set.Names()))
	for _, name := range e.Set.Names() {
		wg.Go(func() {
			if err := e.campaign(ctx, name); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// campaign runs one bucket's elector, again after each lost term, until ctx ends.
func (e *Elector) campaign(ctx context.Context, name string) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: name},
		Client:     e.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
	}
	for ctx.Err() == nil {
		// client-go starts the term on a goroutine of its own: wait for it to end before campaigning
		// again or returning, so that terms of one bucket never overlap.
		started, finished := make(chan struct{}), make(chan struct{})
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            name,
			LeaseDuration:   e.Config.LeaseDuration,
			RenewDeadline:   e.Config.RenewDeadline,
			RetryPeriod:     e.Config.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					defer close(finished)
					close(started)
					e.hold(lctx, name)
				},
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election for %s: %w", name, err)
		}
		le.Run(ctx)
		select {
		case <-started:
			<-finished
		default:
		}
		if ctx.Err() == nil {
			e.Logger.Warnw("Lost a bucket; campaigning again", "bucket", name)
		}
	}
	return nil
}

// hold runs while the bucket's Lease is held; client-go calls it on its own goroutine.
func (e *Elector) hold(ctx context.Context, name string) {
	if ctx.Err() != nil {
		return
	}
	e.mu.Lock()
	e.owned[name] = true
	e.mu.Unlock()
	e.Logger.Infow("Holding a bucket", "bucket", name, "holder", e.Identity)
	if e.Promote != nil {
		e.Promote(ctx, name)
	}
	<-ctx.Done()
	e.mu.Lock()
	delete(e.owned, name)
	e.mu.Unlock()
	e.Logger.Infow("Released a bucket", "bucket", name, "cause", context.Cause(ctx))
	if e.Demote != nil {
		e.Demote(name)
	}
}
