package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions"
	servinginformers "knative.dev/serving/pkg/client/informers/externalversions"

	"github.com/thaw-dev/thaw/pkg/collector"
	"github.com/thaw-dev/thaw/pkg/kpa"
	"github.com/thaw-dev/thaw/pkg/metricreconciler"
	"github.com/thaw-dev/thaw/pkg/multiscaler"
	"github.com/thaw-dev/thaw/pkg/scraper"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// revisionUIDLabel marks Knative revision pods; the pod informer lists only
// pods that carry it.
const revisionUIDLabel = "serving.knative.dev/revisionUID"

// workers per reconciler; upstream's controllers default to 2.
const workers = 2

// term is what runs while this replica holds the Lease: informers, the
// collector and its scrapers, the deciders and both reconcilers. Each term
// builds its own, so a lost and regained Lease starts from fresh caches
// rather than from state that went stale while another replica led.
type term struct {
	coll *collector.Collector
	ms   *multiscaler.MultiScaler
	kpa  *kpa.Reconciler
	// reg holds this term's metrics; the metrics endpoint gathers it while
	// the term runs.
	reg *prometheus.Registry
}

// accept records a stat from the stat server and lets a revision at zero
// decide at once.
func (t *term) accept(sm wire.StatMessage) {
	t.coll.Record(sm.Key, timeOf(sm.Stat), sm.Stat)
	t.ms.Poke(sm.Key, sm.Stat)
}

// newTerm builds a term's parts and registers their informer handlers.
func (a *app) newTerm(logger *zap.SugaredLogger) (*term, *termInformers, error) {
	d := a.deps
	inf := &termInformers{
		pods: kubeinformers.NewSharedInformerFactoryWithOptions(d.Kube, 0,
			kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = revisionUIDLabel })),
		kube:    kubeinformers.NewSharedInformerFactory(d.Kube, 0),
		serving: servinginformers.NewSharedInformerFactory(d.Serving, 0),
		net:     netinformers.NewSharedInformerFactory(d.Networking, 0),
	}
	pods := inf.pods.Core().V1().Pods()
	deployments := inf.kube.Apps().V1().Deployments()
	pas := inf.serving.Autoscaling().V1alpha1().PodAutoscalers()
	metrics := inf.serving.Autoscaling().V1alpha1().Metrics()
	sks := inf.net.Networking().V1alpha1().ServerlessServices()
	// Listers must be requested before the factories start.
	podInformer := pods.Informer()
	inf.synced = []cache.InformerSynced{podInformer.HasSynced, deployments.Informer().HasSynced}

	t := &term{reg: prometheus.NewRegistry()}
	sf := scraper.NewFactory(scraper.Options{
		Pods:          pods.Lister(),
		MeshMode:      func() string { return a.netStore.Load().MeshMode },
		PassthroughLB: func() bool { return a.netStore.Load().Passthrough },
		Clock:         a.clock,
		Logger:        logger.Named("scraper"),
		Registerer:    t.reg,
	})
	t.coll = collector.New(collector.Options{Clock: a.clock, Logger: logger.Named("collector"), Scrapers: sf.New})
	t.ms = multiscaler.New(multiscaler.Options{
		Clock:      a.clock,
		Metrics:    t.coll,
		Pods:       multiscaler.PodCounterFunc(kpa.ReadyPodCounter(pods.Lister())),
		Logger:     logger.Named("multiscaler"),
		ColdStarts: a.cold,
	})
	var err error
	t.kpa, err = kpa.New(kpa.Deps{
		ServingClient:    d.Serving,
		NetworkingClient: d.Networking,
		PodAutoscalers:   pas,
		Metrics:          metrics,
		SKSs:             sks,
		Pods:             podInformer,
		Scales:           kpa.DeploymentScales{Dynamic: d.Dynamic, Deployments: deployments.Lister()},
		Deciders:         t.ms,
		Config:           a.asStore.Load,
		DeploymentConfig: a.depStore.Load,
		Prober:           d.Prober,
		Recorder:         a.recorder,
		Clock:            a.clock,
		Logger:           logger.Named("kpa"),
		ColdStarts:       a.cold,
	})
	if err != nil {
		t.coll.Close()
		return nil, nil, fmt.Errorf("kpa reconciler: %w", err)
	}
	mr, err := metricreconciler.New(metricreconciler.Deps{
		Client: d.Serving, Metrics: metrics, Collector: t.coll, Logger: logger.Named("metric"),
	})
	if err != nil {
		t.coll.Close()
		return nil, nil, fmt.Errorf("metric reconciler: %w", err)
	}
	inf.metric = mr
	// Decisions reconcile their PA; scrape error changes refresh their
	// Metric's status.
	t.ms.Watch(t.kpa.Inform)
	t.coll.Watch(mr.Enqueue)
	t.reg.MustRegister(t.kpa, t.coll, t.ms)
	return t, inf, nil
}

// termInformers are a term's informer factories and its Metric reconciler.
type termInformers struct {
	pods, kube kubeinformers.SharedInformerFactory
	serving    servinginformers.SharedInformerFactory
	net        netinformers.SharedInformerFactory
	synced     []cache.InformerSynced
	metric     *metricreconciler.Reconciler
}

// lead runs one term until ctx ends, then stops everything it started.
func (a *app) lead(ctx context.Context) {
	logger := a.logger
	t, inf, err := a.newTerm(logger)
	if err != nil {
		// Only a programming error gets here (handlers on fresh informers).
		logger.Errorw("Cannot start leading", zap.Error(err))
		return
	}
	defer t.coll.Close()
	inf.pods.Start(ctx.Done())
	inf.kube.Start(ctx.Done())
	inf.serving.Start(ctx.Done())
	inf.net.Start(ctx.Done())
	defer func() {
		inf.pods.Shutdown()
		inf.kube.Shutdown()
		inf.serving.Shutdown()
		inf.net.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), inf.synced...) {
		return
	}

	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				logger.Errorw("Stopped", "part", name, zap.Error(err))
			}
		})
	}
	run("multiscaler", t.ms.Run)
	run("metric reconciler", func(ctx context.Context) error { return inf.metric.Run(ctx, workers) })
	run("kpa reconciler", func(ctx context.Context) error { return t.kpa.Run(ctx, workers) })
	a.cur.Store(t)
	<-ctx.Done()
	a.cur.CompareAndSwap(t, nil)
	wg.Wait()
}

// resyncAll reconciles every PA of the current term (on a config change).
func (a *app) resyncAll() {
	if t := a.cur.Load(); t != nil {
		t.kpa.ResyncAll()
	}
}
