// Package workloop drains a reconciler's work queue: a fixed number of
// workers, each key reconciled by one worker at a time, failures retried
// with the queue's rate limiter, and a clean stop when the context ends.
package workloop

import (
	"context"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
)

// Queue is the work queue the loop drains.
type Queue = workqueue.TypedRateLimitingInterface[types.NamespacedName]

// Run starts workers goroutines calling reconcile for each key taken from q,
// and blocks until ctx ends; it then shuts q down and waits for the workers.
// A failed key is handed to onError and requeued rate-limited; a key that
// succeeds is forgotten by the rate limiter.
func Run(ctx context.Context, q Queue, workers int,
	reconcile func(context.Context, types.NamespacedName) error,
	onError func(types.NamespacedName, error)) {
	done := make(chan struct{})
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for next(ctx, q, reconcile, onError) {
			}
		}()
	}
	<-ctx.Done()
	q.ShutDown()
	for range workers {
		<-done
	}
}

func next(ctx context.Context, q Queue,
	reconcile func(context.Context, types.NamespacedName) error,
	onError func(types.NamespacedName, error)) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	if err := reconcile(ctx, key); err != nil {
		onError(key, err)
		q.AddRateLimited(key)
		return true
	}
	q.Forget(key)
	return true
}
