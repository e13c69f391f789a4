// Package metricreconciler keeps the collector in step with the Metric
// resources: a Metric creates or updates its revision's collection, its
// deletion removes it, and the Metric's Ready condition reports whether
// collection works (NoEndpoints, DidNotReceiveStat, CollectionFailed).
package metricreconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	servingclientset "knative.dev/serving/pkg/client/clientset/versioned"
	asinformers "knative.dev/serving/pkg/client/informers/externalversions/autoscaling/v1alpha1"
	aslisters "knative.dev/serving/pkg/client/listers/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/autoscaler/scraper"
	"github.com/thaw-dev/thaw/pkg/workloop"
)

// QueueName is the workqueue's name as upstream's Metric controller names it (its reconciler's Go
// type), so that the kn_workqueue_* series carry the same name label.
const QueueName = "knative.dev.serving.pkg.reconciler.metric.reconciler"

// Condition reasons, as upstream's.
const (
	ReasonNoEndpoints       = "NoEndpoints"
	ReasonDidNotReceiveStat = "DidNotReceiveStat"
	ReasonCollectionFailed  = "CollectionFailed"
)

// reconcileTimeout bounds one reconcile, as upstream's generated reconcilers.
const reconcileTimeout = 30 * time.Second

// Collector is what the reconciler drives (implemented by collector.Collector).
type Collector interface {
	CreateOrUpdate(key types.NamespacedName, cfg collector.Config) error
	Delete(key types.NamespacedName)
}

// Deps are the reconciler's dependencies.
type Deps struct {
	Client    servingclientset.Interface
	Metrics   asinformers.MetricInformer
	Collector Collector
	Logger    *zap.SugaredLogger
	// Owns, if set, says whether this replica holds key's bucket. Every
	// replica keeps the collection (stats reach all of them, so a new owner
	// starts warm); only the owner writes the Metric's status.
	Owns func(types.NamespacedName) bool
}

// Reconciler reconciles Metrics.
type Reconciler struct {
	client    servingclientset.Interface
	lister    aslisters.MetricLister
	synced    cache.InformerSynced
	collector Collector
	logger    *zap.SugaredLogger
	owns      func(types.NamespacedName) bool
	queue     workqueue.TypedRateLimitingInterface[types.NamespacedName]
}

// New returns a Reconciler and registers its handlers on the Metric
// informer. The caller starts the informer; Run waits for its sync.
func New(d Deps) (*Reconciler, error) {
	r := &Reconciler{
		client:    d.Client,
		lister:    d.Metrics.Lister(),
		synced:    d.Metrics.Informer().HasSynced,
		collector: d.Collector,
		logger:    d.Logger,
		owns:      d.Owns,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: QueueName}),
	}
	if r.logger == nil {
		r.logger = zap.NewNop().Sugar()
	}
	_, err := d.Metrics.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.enqueueObj,
		UpdateFunc: func(_, obj any) { r.enqueueObj(obj) },
		DeleteFunc: r.enqueueObj,
	})
	if err != nil {
		return nil, fmt.Errorf("metric informer handler: %w", err)
	}
	return r, nil
}

func (r *Reconciler) enqueueObj(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(metav1.Object); ok {
		r.Enqueue(types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()})
	}
}

// Enqueue asks for key to be reconciled; the collector's OnChange calls it
// when a revision's scrape error changes.
func (r *Reconciler) Enqueue(key types.NamespacedName) { r.queue.Add(key) }

// ResyncAll enqueues every Metric (when a bucket is won, so that its
// Metrics' status is written by the new owner).
func (r *Reconciler) ResyncAll() {
	ms, err := r.lister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, m := range ms {
		r.Enqueue(types.NamespacedName{Namespace: m.Namespace, Name: m.Name})
	}
}

// Run reconciles with workers goroutines until ctx ends.
func (r *Reconciler) Run(ctx context.Context, workers int) error {
	defer r.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced) {
		return errors.New("metric informer did not sync")
	}
	workloop.Run(ctx, r.queue, workers, r.Reconcile, func(key types.NamespacedName, err error) {
		r.logger.Warnw("Metric reconcile failed; retrying", "key", key.String(), zap.Error(err))
	})
	return nil
}

// Reconcile brings the collection of key in line with its Metric.
func (r *Reconciler) Reconcile(ctx context.Context, key types.NamespacedName) error {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	m, err := r.lister.Metrics(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		r.collector.Delete(key)
		return nil
	}
	if err != nil {
		return err
	}
	if m.DeletionTimestamp != nil {
		r.collector.Delete(key)
		return nil
	}
	want := m.DeepCopy()
	cfg := collector.ConfigFromMetric(m)
	if err := validWindows(cfg); err != nil {
		// A hand-made Metric could ask for a window of years: one bucket per
		// second would then take gigabytes. Refuse it instead.
		r.collector.Delete(key)
		SetStatus(&want.Status, err)
	} else {
		SetStatus(&want.Status, r.collector.CreateOrUpdate(key, cfg))
	}
	want.Status.ObservedGeneration = m.Generation
	if r.owns != nil && !r.owns(key) {
		return nil // the owner writes the status
	}
	if equality.Semantic.DeepEqual(want.Status, m.Status) {
		return nil
	}
	_, err = r.client.AutoscalingV1alpha1().Metrics(key.Namespace).UpdateStatus(ctx, want, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// MaxWindow is the longest stable window accepted, as the webhook's bound
// on the window annotation.
const MaxWindow = time.Hour

func validWindows(c collector.Config) error {
	if c.StableWindow <= 0 || c.StableWindow > MaxWindow || c.PanicWindow <= 0 || c.PanicWindow > c.StableWindow {
		return fmt.Errorf("invalid windows: stable %v must be in (0, %v] and panic %v in (0, stable]",
			c.StableWindow, MaxWindow, c.PanicWindow)
	}
	return nil
}

// SetStatus sets the Ready condition from the collection error. Retrying
// does not help a failed collection; the collector enqueues the Metric again
// when its error changes.
func SetStatus(st *autoscalingv1alpha1.MetricStatus, err error) {
	switch {
	case err == nil:
		st.MarkMetricReady()
	case errors.Is(err, scraper.ErrNoEndpoints):
		st.MarkMetricNotReady(ReasonNoEndpoints, err.Error())
	case errors.Is(err, scraper.ErrDidNotReceiveStat):
		st.MarkMetricFailed(ReasonDidNotReceiveStat, err.Error())
	default:
		st.MarkMetricFailed(ReasonCollectionFailed, "Failed to reconcile metric collection: "+err.Error())
	}
}
