package kpa

import (
	"context"
	"sync"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/thaw-dev/thaw/pkg/workloop"
)

// wakeWorkers patch /scale for revisions leaving zero.
const wakeWorkers = 8

// The wake path patches a revision's /scale from 0 apart from the reconcile
// queue. Under a burst of cold starts the reconcile workers wait on status
// and SKS writes through the shared API budget, and a scale from zero queued
// behind them waited seconds on the lab (12.6 s p50 at 100 revisions at
// once). The reconcile that follows finds the scale applied and writes the
// status as before; the wake path never writes anything else.
type waker struct {
	// A rate-limiting queue only because the worker loop takes one; wakeOne
	// never fails, so nothing is ever retried from it.
	queue workqueue.TypedRateLimitingInterface[types.NamespacedName]
}

func newWaker() *waker {
	return &waker{queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "kpa-wake"})}
}

// Inform is the multiscaler's callback: reconcile key, and when its decider
// wants pods, also wake it (the wake path checks that it is at zero).
func (r *Reconciler) Inform(key types.NamespacedName) {
	r.Enqueue(key)
	if st, _, err := r.d.Deciders.Get(key); err == nil && st.DesiredScale > 0 {
		r.wake.queue.Add(key)
	}
}

// runWake drains the wake queue until ctx ends; wg tracks it.
func (r *Reconciler) runWake(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		workloop.Run(ctx, r.wake.queue, wakeWorkers, r.wakeOne, func(types.NamespacedName, error) {})
	}()
}

// wakeOne patches key's scale target from 0 to what its decider wants,
// within the same bounds the reconcile applies. Errors are logged, never
// retried here: the reconcile is queued too and retries.
func (r *Reconciler) wakeOne(ctx context.Context, key types.NamespacedName) error {
	if !r.owns(key) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	pa, err := r.paLister.PodAutoscalers(key.Namespace).Get(key.Name)
	if err != nil || !isKPA(pa) || pa.DeletionTimestamp != nil {
		return nil
	}
	st, _, err := r.d.Deciders.Get(key)
	if err != nil || st.DesiredScale <= 0 {
		return nil
	}
	cur, err := r.d.Scales.Replicas(pa.Namespace, pa.Spec.ScaleTargetRef)
	if err != nil || cur == nil || *cur != 0 {
		return nil
	}
	sks, err := r.sksLister.ServerlessServices(pa.Namespace).Get(pa.Name)
	if err != nil {
		return nil
	}
	cfg, dcfg := r.d.Config(), r.d.DeploymentConfig()
	s := Resolve(cfg, dcfg, pa)
	logger := r.d.Logger.With("key", key.String())
	if _, err := r.scale(ctx, pa.DeepCopy(), sks, &s, st.DesiredScale, cfg, logger); err != nil {
		logger.Warnw("Scale from zero failed; the reconcile retries it", zap.Error(err))
	}
	return nil
}
