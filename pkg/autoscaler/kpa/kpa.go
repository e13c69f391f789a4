// Package kpa reconciles PodAutoscalers of class kpa.autoscaling.knative.dev:
// it keeps the revision's ServerlessService (activator in or out of the
// path), its Metric, and its decider, scales the Deployment through the
// scale subresource to what the decider wants within the scale bounds, takes
// the revision to zero only once the activator is proven to be in the path,
// and writes the PA status.
//
// Thaw's learned keep-alive / pre-warm policy (keepalive.go) changes the
// scale-to-zero path of revisions that ask for it: config-autoscaler's
// thaw-keep-alive (off, learned, hybrid) or the Revision annotation
// autoscaling.thaw.dev/keep-alive; the PA then carries the annotations
// autoscaling.thaw.dev/keep-alive-windows and -state. With neither set,
// scale to zero is upstream's.
package kpa

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"knative.dev/pkg/apis"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions/networking/v1alpha1"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	servingclientset "knative.dev/serving/pkg/client/clientset/versioned"
	asinformers "knative.dev/serving/pkg/client/informers/externalversions/autoscaling/v1alpha1"
	aslisters "knative.dev/serving/pkg/client/listers/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/workloop"
)

// QueueName is the workqueue's name as upstream's KPA controller names it (its reconciler's Go type),
// so that the kn_workqueue_* series carry the same name label.
const QueueName = "knative.dev.serving.pkg.reconciler.autoscaling.kpa.Reconciler"

// Label keys.
const (
	revisionLabel      = "serving.knative.dev/revision"
	serviceLabel       = "serving.knative.dev/service"
	configurationLabel = "serving.knative.dev/configuration"
)

// Status reasons and messages, as upstream's.
const (
	noPrivateServiceName = "No Private Service Name"
	reasonNoTraffic      = "NoTraffic"
	reasonTimedOut       = "TimedOut"
	reasonQueued         = "Queued"
	// ConditionAnnotationsValid is added (False, severity Warning) only
	// while an autoscaling annotation is invalid, so valid PAs carry
	// upstream's conditions exactly.
	ConditionAnnotationsValid apis.ConditionType = "AnnotationsValid"
	reasonInvalidAnnotation                      = "InvalidAnnotation"
	failedGenerationBump                         = "NewObservedGenFailure"
)

const (
	scaleUnknown     = -1
	reconcileTimeout = 30 * time.Second
	// proxyRecheck re-enqueues a PA marked inactive while its SKS is
	// already in Proxy mode, as no SKS change will trigger it.
	proxyRecheck = 3 * time.Second
)

// Deciders is the multiscaler, as the reconciler uses it.
type Deciders interface {
	Create(key types.NamespacedName, spec decider.Spec, labels multiscaler.Labels) multiscaler.Status
	Update(key types.NamespacedName, spec decider.Spec) (multiscaler.Status, error)
	Get(key types.NamespacedName) (multiscaler.Status, decider.Spec, error)
	Delete(key types.NamespacedName)
}

// Deps are the reconciler's dependencies. The informers are started by the
// caller; Run waits for them to sync.
type Deps struct {
	ServingClient    servingclientset.Interface
	NetworkingClient netclientset.Interface
	PodAutoscalers   asinformers.PodAutoscalerInformer
	Metrics          asinformers.MetricInformer
	SKSs             netinformers.ServerlessServiceInformer
	// Pods is an informer of Knative pods (label-filtered by
	// serving.knative.dev/revisionUID).
	Pods     cache.SharedIndexInformer
	Scales   ScaleClient
	Deciders Deciders
	// Config and DeploymentConfig return the live config-autoscaler and
	// config-deployment.
	Config           func() *asconfig.Config
	DeploymentConfig func() *asconfig.DeploymentConfig
	// Prober checks that the activator answers for a revision; nil means
	// an HTTP prober.
	Prober        Prober
	ClusterDomain string
	Recorder      record.EventRecorder
	Clock         clock.WithTicker
	Logger        *zap.SugaredLogger
	// ColdStarts, if set, is told when a /scale patch from 0 returned OK
	// (coldstart.Recorder completes the revision's open record).
	ColdStarts ScaleWatcher
	// Owns, if set, says whether this replica holds key's bucket; a PA of
	// a bucket held elsewhere is not reconciled here, and its decider is
	// dropped (another replica decides). Nil owns everything.
	Owns func(types.NamespacedName) bool
}

// ScaleWatcher hears of successful scales from zero. It must not block.
type ScaleWatcher interface {
	ScaleWritten(key types.NamespacedName, at time.Time, desired int32)
}

// Reconciler reconciles KPA-class PodAutoscalers.
type Reconciler struct {
	d          Deps
	paLister   aslisters.PodAutoscalerLister
	mLister    aslisters.MetricLister
	sksLister  netlisters.ServerlessServiceLister
	pods       corev1listers.PodLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[types.NamespacedName]
	probes     *asyncProber
	podMetrics podMetrics
	// after delays a reconcile (the queue's AddAfter; replaceable in tests).
	after func(types.NamespacedName, time.Duration)
	wake  *waker
	// pacing holds scale-ups from zero to the pod-start capacity.
	pacing *pacing
	// keepAlive holds the learned keep-alive policies (keepalive.go).
	keepAlive *keepAlives
}

// New returns a Reconciler and registers its event handlers on the
// informers.
func New(d Deps) (*Reconciler, error) {
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop().Sugar()
	}
	if d.Recorder == nil {
		d.Recorder = &record.FakeRecorder{}
	}
	if d.Prober == nil {
		d.Prober = NewHTTPProber(nil)
	}
	if d.ClusterDomain == "" {
		d.ClusterDomain = DefaultClusterDomain()
	}
	r := &Reconciler{
		d:         d,
		paLister:  d.PodAutoscalers.Lister(),
		mLister:   d.Metrics.Lister(),
		sksLister: d.SKSs.Lister(),
		pods:      corev1listers.NewPodLister(d.Pods.GetIndexer()),
		synced: []cache.InformerSynced{d.PodAutoscalers.Informer().HasSynced, d.Metrics.Informer().HasSynced,
			d.SKSs.Informer().HasSynced, d.Pods.HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: QueueName, Clock: d.Clock}),
	}
	r.after = r.queue.AddAfter
	r.wake = newWaker()
	var err error
	if r.pacing, err = newPacing(r); err != nil {
		return nil, err
	}
	if r.keepAlive, err = newKeepAlives(r); err != nil {
		return nil, err
	}
	r.probes = newAsyncProber(d.Prober, d.Clock, r.EnqueueAfter, d.Logger)

	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{d.PodAutoscalers.Informer(), cache.FilteringResourceEventHandler{
			FilterFunc: isKPA, Handler: r.handler(r.enqueueObj)}},
		{d.Metrics.Informer(), r.handler(r.enqueueOwner)},
		{d.SKSs.Informer(), r.handler(r.enqueueOwner)},
		{d.Pods, r.handler(r.enqueuePodRevision)},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
	}
	return r, nil
}

func (r *Reconciler) handler(f func(any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    f,
		UpdateFunc: func(_, obj any) { f(obj) },
		DeleteFunc: f,
	}
}

func unwrap(obj any) (metav1.Object, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(metav1.Object)
	return m, ok
}

// isKPA keeps PAs with the class annotation set to KPA (as upstream's
// filter, an unset class is not ours).
func isKPA(obj any) bool {
	m, ok := unwrap(obj)
	return ok && m.GetAnnotations()[asconfig.ClassAnnotationKey] == asconfig.KPA
}

func (r *Reconciler) enqueueObj(obj any) {
	if m, ok := unwrap(obj); ok {
		r.Enqueue(types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()})
	}
}

func (r *Reconciler) enqueueOwner(obj any) {
	m, ok := unwrap(obj)
	if !ok {
		return
	}
	if ref := metav1.GetControllerOf(m); ref != nil && ref.Kind == "PodAutoscaler" &&
		ref.APIVersion == autoscalingv1alpha1.SchemeGroupVersion.String() {
		r.Enqueue(types.NamespacedName{Namespace: m.GetNamespace(), Name: ref.Name})
	}
}

func (r *Reconciler) enqueuePodRevision(obj any) {
	if m, ok := unwrap(obj); ok {
		if rev := m.GetLabels()[revisionLabel]; rev != "" {
			r.Enqueue(types.NamespacedName{Namespace: m.GetNamespace(), Name: rev})
		}
	}
}

// Enqueue asks for the PA key to be reconciled; it is the multiscaler's
// Inform callback.
func (r *Reconciler) Enqueue(key types.NamespacedName) { r.queue.Add(key) }

// EnqueueAfter reconciles key after d.
func (r *Reconciler) EnqueueAfter(key types.NamespacedName, d time.Duration) { r.after(key, d) }

// owns reports whether this replica reconciles key.
func (r *Reconciler) owns(key types.NamespacedName) bool { return r.d.Owns == nil || r.d.Owns(key) }

// ResyncAll enqueues every KPA-class PA (on a config change, or when a
// bucket is won or lost).
func (r *Reconciler) ResyncAll() {
	pas, err := r.paLister.List(labels.Everything())
	if err != nil {
		return
	}
	r.keepAlive.resync(pas)
	for _, pa := range pas {
		if isKPA(pa) {
			r.Enqueue(types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name})
		}
	}
}

// Run reconciles with workers goroutines until ctx ends.
func (r *Reconciler) Run(ctx context.Context, workers int) error {
	defer r.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return errors.New("kpa: informers did not sync")
	}
	r.probes.start(ctx)
	var wg sync.WaitGroup
	r.runWake(ctx, &wg)
	r.pacing.start(ctx, &wg)
	r.keepAlive.start(ctx, &wg)
	workloop.Run(ctx, r.queue, workers, r.Reconcile, func(key types.NamespacedName, err error) {
		r.d.Logger.Warnw("PodAutoscaler reconcile failed; retrying", "key", key.String(), zap.Error(err))
	})
	wg.Wait()
	r.probes.wait()
	return nil
}

// Reconcile reconciles the PA key.
func (r *Reconciler) Reconcile(ctx context.Context, key types.NamespacedName) error {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	if !r.owns(key) {
		// Another replica's bucket: it decides and writes.
		r.d.Deciders.Delete(key)
		r.probes.cancel(key)
		r.podMetrics.delete(key)
		return nil
	}
	orig, err := r.paLister.PodAutoscalers(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) || (err == nil && !isKPA(orig)) {
		// Deleted, or handed to another class.
		r.d.Deciders.Delete(key)
		r.probes.cancel(key)
		r.podMetrics.delete(key)
		return nil
	}
	if err != nil {
		return err
	}
	if orig.DeletionTimestamp != nil {
		return nil
	}
	pa := orig.DeepCopy()
	st := &pa.Status
	st.InitializeConditions()
	if st.ObservedGeneration != pa.Generation {
		cs := pa.GetConditionSet()
		cs.Manage(st).MarkUnknown(cs.GetTopLevelConditionType(), failedGenerationBump,
			"unsuccessfully observed a new generation")
	}
	logger := r.d.Logger.With("key", key.String())
	r.keepAlive.sync(orig)
	rerr := r.reconcile(ctx, pa, logger)

	st.ObservedGeneration = pa.Generation
	r.groomTransitionTimes(pa, orig)
	if equality.Semantic.DeepEqual(orig.Status, pa.Status) {
		return errors.Join(rerr, r.keepAlive.persist(ctx, orig))
	}
	if _, err := r.d.ServingClient.AutoscalingV1alpha1().PodAutoscalers(pa.Namespace).UpdateStatus(ctx, pa,
		metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return errors.Join(rerr, fmt.Errorf("updating status: %w", err))
	}
	// After the status: the annotations' patch moves the resource version.
	return errors.Join(rerr, r.keepAlive.persist(ctx, orig))
}

// groomTransitionTimes keeps a condition's transition time unless the
// condition changed, and stamps changed ones with the injected clock (the
// condition helpers use the wall clock).
func (r *Reconciler) groomTransitionTimes(pa, orig *autoscalingv1alpha1.PodAutoscaler) {
	now := apis.VolatileTime{Inner: metav1.NewTime(r.d.Clock.Now())}
	for i := range pa.Status.Conditions {
		c := &pa.Status.Conditions[i]
		if old := orig.Status.GetCondition(c.Type); old != nil {
			c.LastTransitionTime = old.LastTransitionTime
			if equality.Semantic.DeepEqual(*c, *old) {
				continue
			}
			// Activating with a new reason (Queued, or why the pods cannot start, which the kubelet
			// changes at each retry): the same activation, whose timeout runs from its start.
			if c.Type == autoscalingv1alpha1.PodAutoscalerConditionActive &&
				c.Status == corev1.ConditionUnknown && old.Status == corev1.ConditionUnknown {
				continue
			}
		}
		c.LastTransitionTime = now
	}
}

type podCounts struct {
	want, ready, notReady, pending, terminating int
	// cannotStart and its message, when every live pod is stuck (see cannotStart): the reason an
	// activating PA reports instead of Queued.
	cannotStart, cannotStartMessage string
}

func (r *Reconciler) reconcile(ctx context.Context, pa *autoscalingv1alpha1.PodAutoscaler, logger *zap.SugaredLogger) error {
	cfg, dcfg := r.d.Config(), r.d.DeploymentConfig()
	s := Resolve(cfg, dcfg, pa)
	r.markAnnotations(pa, s.Invalid)

	sks, err := r.sksLister.ServerlessServices(pa.Namespace).Get(pa.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		logger.Warnw("Error retrieving SKS", zap.Error(err))
	}
	if sks == nil || sks.Status.PrivateServiceName == "" {
		// The private service is the scrape target; until it exists, put the
		// activator in the path with the minimal subset.
		if _, err := r.reconcileSKS(ctx, pa, nv1alpha1.SKSOperationModeProxy, minActivators); err != nil {
			return fmt.Errorf("reconciling SKS: %w", err)
		}
		pa.Status.MarkSKSNotReady(noPrivateServiceName)
		r.computeStatus(pa, &s, podCounts{want: scaleUnknown})
		return nil
	}
	pa.Status.MetricsServiceName = sks.Status.PrivateServiceName

	dst, dspec := r.reconcileDecider(pa, &s)
	if err := r.reconcileMetric(ctx, pa, MakeMetric(pa, &s, scrapeTarget(&s, pa.Status.MetricsServiceName))); err != nil {
		return fmt.Errorf("reconciling Metric: %w", err)
	}

	want, err := r.scale(ctx, pa, sks, &s, dst.DesiredScale, cfg, logger)
	if err != nil {
		return fmt.Errorf("scaling target: %w", err)
	}

	mode := nv1alpha1.SKSOperationModeProxy
	switch {
	case want == scaleUnknown && pa.Status.IsInactive():
		// Restarted without metrics while scaled down: keep proxying.
	case want == scaleUnknown:
		// No decision yet (a restarted autoscaler): keep the current mode.
		// Upstream switches to Proxy here until the first decision, moving
		// the activator into the path of every revision at each restart.
		mode = sks.Spec.Mode
	case want > 0 && dst.ExcessBurstCapacity >= 0:
		mode = nv1alpha1.SKSOperationModeServe
	}

	pc, err := r.podCounts(pa)
	if err != nil {
		return fmt.Errorf("counting pods: %w", err)
	}
	pc.want = int(want)
	num := NumActivators(pc.ready, dspec)
	logger.Debugw("SKS target", "mode", mode, "want", want, "ebc", dst.ExcessBurstCapacity, "activators", num)

	sks, err = r.reconcileSKS(ctx, pa, mode, num)
	if err != nil {
		return fmt.Errorf("reconciling SKS: %w", err)
	}
	pa.Status.ServiceName = sks.Status.ServiceName
	if sks.IsReady() {
		pa.Status.MarkSKSReady()
	} else {
		pa.Status.MarkSKSNotReady(sks.Status.GetCondition(nv1alpha1.ServerlessServiceConditionReady).GetMessage())
	}
	r.computeStatus(pa, &s, pc)
	return nil
}

func (r *Reconciler) markAnnotations(pa *autoscalingv1alpha1.PodAutoscaler, invalid error) {
	cm := pa.GetConditionSet().Manage(&pa.Status)
	if invalid == nil {
		_ = cm.ClearCondition(ConditionAnnotationsValid)
		return
	}
	cm.SetCondition(apis.Condition{
		Type:     ConditionAnnotationsValid,
		Status:   corev1.ConditionFalse,
		Severity: apis.ConditionSeverityWarning,
		Reason:   reasonInvalidAnnotation,
		Message:  invalid.Error() + " (the ConfigMap value is used instead)",
	})
}

func (r *Reconciler) reconcileDecider(pa *autoscalingv1alpha1.PodAutoscaler, s *Settings) (multiscaler.Status, decider.Spec) {
	key := types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name}
	st, spec, err := r.d.Deciders.Get(key)
	if err != nil {
		return r.d.Deciders.Create(key, s.Decider, multiscaler.Labels{
			Service: pa.Labels[serviceLabel], Configuration: pa.Labels[configurationLabel]}), s.Decider
	}
	if spec != s.Decider {
		if st2, err := r.d.Deciders.Update(key, s.Decider); err == nil {
			st = st2
		}
	}
	return st, s.Decider
}

func (r *Reconciler) reconcileSKS(ctx context.Context, pa *autoscalingv1alpha1.PodAutoscaler,
	mode nv1alpha1.ServerlessServiceOperationMode, num int32) (*nv1alpha1.ServerlessService, error) {
	want := MakeSKS(pa, mode, num)
	client := r.d.NetworkingClient.NetworkingV1alpha1().ServerlessServices(pa.Namespace)
	sks, err := r.sksLister.ServerlessServices(pa.Namespace).Get(pa.Name)
	if apierrors.IsNotFound(err) {
		created, cerr := client.Create(ctx, want, metav1.CreateOptions{})
		if cerr == nil {
			return created, nil
		}
		if !apierrors.IsAlreadyExists(cerr) {
			return nil, fmt.Errorf("creating SKS %s: %w", pa.Name, cerr)
		}
		// The informer has not seen our earlier create yet: carry on with
		// the API's copy rather than failing and requeueing.
		sks, err = client.Get(ctx, pa.Name, metav1.GetOptions{})
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("getting SKS %s: %w", pa.Name, err)
	case !metav1.IsControlledBy(sks, pa):
		pa.Status.MarkResourceNotOwned("ServerlessService", pa.Name)
		return nil, fmt.Errorf("PA %s does not own SKS %s", pa.Name, pa.Name)
	case !equality.Semantic.DeepEqual(want.Spec, sks.Spec):
		upd := sks.DeepCopy()
		upd.Spec = want.Spec
		out, err := client.Update(ctx, upd, metav1.UpdateOptions{})
		if err != nil {
			return nil, fmt.Errorf("updating SKS %s: %w", pa.Name, err)
		}
		return out, nil
	}
	return sks, nil
}

func (r *Reconciler) reconcileMetric(ctx context.Context, pa *autoscalingv1alpha1.PodAutoscaler, want *autoscalingv1alpha1.Metric) error {
	client := r.d.ServingClient.AutoscalingV1alpha1().Metrics(pa.Namespace)
	m, err := r.mLister.Metrics(pa.Namespace).Get(pa.Name)
	if apierrors.IsNotFound(err) {
		_, cerr := client.Create(ctx, want, metav1.CreateOptions{})
		if cerr == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(cerr) {
			return fmt.Errorf("creating metric: %w", cerr)
		}
		// The informer has not seen our earlier create yet: carry on with
		// the API's copy rather than failing and requeueing.
		m, err = client.Get(ctx, pa.Name, metav1.GetOptions{})
	}
	switch {
	case err != nil:
		return fmt.Errorf("getting metric: %w", err)
	case !metav1.IsControlledBy(m, pa):
		pa.Status.MarkResourceNotOwned("Metric", pa.Name)
		return fmt.Errorf("PA %s does not own Metric %s", pa.Name, pa.Name)
	case !equality.Semantic.DeepEqual(want.Spec, m.Spec):
		upd := m.DeepCopy()
		upd.Spec = want.Spec
		if _, err := client.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating metric: %w", err)
		}
	}
	return nil
}

// podCounts counts the revision's pods by state, as upstream's pod accessor.
func (r *Reconciler) podCounts(pa *autoscalingv1alpha1.PodAutoscaler) (podCounts, error) {
	var pc podCounts
	pods, err := r.pods.Pods(pa.Namespace).List(labels.SelectorFromSet(labels.Set{revisionLabel: pa.Labels[revisionLabel]}))
	if err != nil {
		return pc, err
	}
	for _, p := range pods {
		switch p.Status.Phase {
		case corev1.PodPending:
			pc.pending++
			pc.notReady++
		case corev1.PodRunning:
			switch {
			case p.DeletionTimestamp != nil:
				pc.terminating++
				pc.notReady++
			case podReady(p):
				pc.ready++
			default:
				pc.notReady++
			}
		}
	}
	pc.cannotStart, pc.cannotStartMessage = cannotStart(pods)
	return pc, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ReadyPods counts the ready pods of a revision.
func (r *Reconciler) ReadyPods(key types.NamespacedName) (int, error) {
	return ReadyPodCounter(r.pods)(key)
}

// ReadyPodCounter counts the Running, Ready, not terminating pods of a
// revision from a pod lister; it fits multiscaler.PodCounterFunc, so the
// multiscaler can be built before the reconciler.
func ReadyPodCounter(pods corev1listers.PodLister) func(types.NamespacedName) (int, error) {
	return func(key types.NamespacedName) (int, error) {
		list, err := pods.Pods(key.Namespace).List(labels.SelectorFromSet(labels.Set{revisionLabel: key.Name}))
		if err != nil {
			return 0, err
		}
		n := 0
		for _, p := range list {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && podReady(p) {
				n++
			}
		}
		return n, nil
	}
}

// activeThreshold is the ready count at which the PA is Active.
func activeThreshold(pa *autoscalingv1alpha1.PodAutoscaler, s *Settings) int {
	if !pa.Status.IsScaleTargetInitialized() {
		return int(max(s.MinScale, s.InitialScale))
	}
	return int(max(s.MinScale, 1))
}

func (r *Reconciler) computeStatus(pa *autoscalingv1alpha1.PodAutoscaler, s *Settings, pc podCounts) {
	ready := int32(pc.ready)
	pa.Status.ActualScale = &ready
	r.podMetrics.set(types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name},
		podGauge{service: pa.Labels[serviceLabel], configuration: pa.Labels[configurationLabel], pc: pc})
	// After a restart the decider has no data yet (−1); keep the last
	// known desired scale instead of flapping through −1.
	if !(pc.want == scaleUnknown && pa.Status.DesiredScale != nil && *pa.Status.DesiredScale >= 0) {
		w := int32(pc.want)
		pa.Status.DesiredScale = &w
	}
	computeActiveCondition(pa, s, pc)
}

// computeActiveCondition sets Active (and ScaleTargetInitialized) from the
// wanted and ready counts, following upstream's table:
//
//	want 0 (or threshold 0)            → Inactive (TimedOut if it was activating)
//	ready < threshold, want > 0        → Activating (Queued)
//	ready < threshold, want −1         → Activating, unless Inactive
//	ready ≥ threshold, want > 0        → Active
//	ready ≥ threshold, want −1         → Active, unless Inactive
func computeActiveCondition(pa *autoscalingv1alpha1.PodAutoscaler, s *Settings, pc podCounts) {
	minReady := activeThreshold(pa, s)
	if pc.ready >= minReady && pa.Status.ServiceName != "" {
		pa.Status.MarkScaleTargetInitialized()
	}
	switch {
	case pc.want == 0 || minReady == 0:
		if pa.Status.IsActivating() && minReady > 0 {
			// Only an activation timeout scales an activating PA to zero.
			pa.Status.MarkInactive(reasonTimedOut, "The target could not be activated.")
		} else {
			pa.Status.MarkInactive(reasonNoTraffic, "The target is not receiving traffic.")
		}
	case pc.ready < minReady:
		switch {
		case pc.want <= 0 && pa.Status.IsInactive():
			pa.Status.MarkInactive(reasonNoTraffic, "The target is not receiving traffic.")
		case pc.cannotStart != "":
			// Still activating (the activation timeout runs on), but saying why the pods cannot start:
			// the activator fails the revision's requests fast on it.
			pa.Status.MarkActivating(pc.cannotStart, pc.cannotStartMessage)
		default:
			pa.Status.MarkActivating(reasonQueued, "Requests to the target are being buffered as resources are provisioned.")
		}
	default:
		if pc.want > 0 || !pa.Status.IsInactive() {
			pa.Status.MarkActive()
		}
	}
}
