package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions"
	servinginformers "knative.dev/serving/pkg/client/informers/externalversions"

	"github.com/thaw-dev/thaw/pkg/autoscaler/bucket"
	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/autoscaler/kpa"
	"github.com/thaw-dev/thaw/pkg/autoscaler/metricreconciler"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/autoscaler/scraper"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// revisionUIDLabel marks Knative revision pods; the pod informer lists only pods that carry it.
const revisionUIDLabel = "serving.knative.dev/revisionUID"

// workers per reconciler; upstream's controllers default to 2.
const workers = 2

// parts are the informers, the collector, the deciders and both reconcilers. They run for the life of
// the process on every replica; bucket ownership only decides which keys each reconciles and scrapes,
// so winning a bucket costs no informer re-list.
type parts struct {
	coll   *collector.Collector
	ms     *multiscaler.MultiScaler
	kpa    *kpa.Reconciler
	metric *metricreconciler.Reconciler

	pods, kube, system kubeinformers.SharedInformerFactory
	serving            servinginformers.SharedInformerFactory
	net                netinformers.SharedInformerFactory
	leases             coordinationlisters.LeaseLister
	slices             discoverylisters.EndpointSliceLister
	synced             []cache.InformerSynced
}

// newParts builds the parts and registers their informer handlers and metrics.
func (a *app) newParts(logger *zap.SugaredLogger, reg prometheus.Registerer) (*parts, error) {
	d := a.deps
	p := &parts{
		pods: kubeinformers.NewSharedInformerFactoryWithOptions(d.Kube, 0,
			kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = revisionUIDLabel })),
		kube:    kubeinformers.NewSharedInformerFactory(d.Kube, 0),
		system:  kubeinformers.NewSharedInformerFactoryWithOptions(d.Kube, 0, kubeinformers.WithNamespace(a.cfg.Namespace)),
		serving: servinginformers.NewSharedInformerFactory(d.Serving, 0),
		net:     netinformers.NewSharedInformerFactory(d.Networking, 0),
	}
	pods := p.pods.Core().V1().Pods()
	deployments := p.kube.Apps().V1().Deployments()
	pas := p.serving.Autoscaling().V1alpha1().PodAutoscalers()
	metrics := p.serving.Autoscaling().V1alpha1().Metrics()
	sks := p.net.Networking().V1alpha1().ServerlessServices()
	leases := p.system.Coordination().V1().Leases()
	slices := p.system.Discovery().V1().EndpointSlices()
	// Listers must be requested before the factories start.
	podInformer := pods.Informer()
	p.leases, p.slices = leases.Lister(), slices.Lister()
	p.synced = []cache.InformerSynced{podInformer.HasSynced, deployments.Informer().HasSynced,
		leases.Informer().HasSynced, slices.Informer().HasSynced}
	refresh := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.refreshPeers() },
		UpdateFunc: func(any, any) { a.refreshPeers() },
		DeleteFunc: func(any) { a.refreshPeers() },
	}
	if _, err := leases.Informer().AddEventHandler(refresh); err != nil {
		return nil, err
	}
	if _, err := slices.Informer().AddEventHandler(refresh); err != nil {
		return nil, err
	}

	sf := scraper.NewFactory(scraper.Options{
		Pods:          pods.Lister(),
		MeshMode:      func() string { return a.netStore.Load().MeshMode },
		PassthroughLB: func() bool { return a.netStore.Load().Passthrough },
		Clock:         a.clock,
		Logger:        logger.Named("scraper"),
		Registerer:    reg,
	})
	p.coll = collector.New(collector.Options{Clock: a.clock, Logger: logger.Named("collector"), Scrapers: sf.New,
		ScrapeGate: a.el.Owns,
		OnScrape: func(key types.NamespacedName, at time.Time, s wire.Stat) {
			s.Timestamp = at.Unix()
			a.fwd.Mirror(wire.StatMessage{Key: key, Stat: s})
			p.kpa.ObserveStat(key, s) // the keep-alive policy's idle times
		}})
	p.ms = multiscaler.New(multiscaler.Options{
		Clock:      a.clock,
		Metrics:    p.coll,
		Pods:       multiscaler.PodCounterFunc(kpa.ReadyPodCounter(pods.Lister())),
		Logger:     logger.Named("multiscaler"),
		ColdStarts: a.cold,
	})
	var err error
	p.kpa, err = kpa.New(kpa.Deps{
		ServingClient:    d.Serving,
		NetworkingClient: d.Networking,
		PodAutoscalers:   pas,
		Metrics:          metrics,
		SKSs:             sks,
		Pods:             podInformer,
		Scales:           a.faultScales(kpa.DeploymentScales{Dynamic: d.Dynamic, Deployments: deployments.Lister()}),
		Deciders:         a.faultDeciders(p.ms),
		Config:           a.asStore.Load,
		DeploymentConfig: a.depStore.Load,
		Prober:           d.Prober,
		Recorder:         a.recorder,
		Clock:            a.clock,
		Logger:           logger.Named("kpa"),
		ColdStarts:       a.cold,
		Owns:             a.el.Owns,
	})
	if err != nil {
		p.coll.Close()
		return nil, fmt.Errorf("kpa reconciler: %w", err)
	}
	p.metric, err = metricreconciler.New(metricreconciler.Deps{
		Client: d.Serving, Metrics: metrics, Collector: p.coll, Logger: logger.Named("metric"), Owns: a.el.Owns,
	})
	if err != nil {
		p.coll.Close()
		return nil, fmt.Errorf("metric reconciler: %w", err)
	}
	// Decisions reconcile their PA; scrape error changes refresh their Metric's status.
	p.ms.Watch(p.kpa.Inform)
	p.coll.Watch(p.metric.Enqueue)
	reg.MustRegister(p.kpa, p.coll, p.ms)
	return p, nil
}

// start starts the informers and waits for the caches the reconcilers need, giving up when wait ends.
func (p *parts) start(ctx, wait context.Context) error {
	for _, f := range []interface{ Start(<-chan struct{}) }{p.pods, p.kube, p.system, p.serving, p.net} {
		f.Start(ctx.Done())
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(wait, cancel)
	defer stop()
	if !cache.WaitForCacheSync(sctx.Done(), p.synced...) {
		return errors.New("informers did not sync")
	}
	return nil
}

// run runs the deciders and reconcilers until ctx ends, then shuts the informers down.
func (p *parts) run(ctx context.Context, logger *zap.SugaredLogger) {
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				logger.Errorw("Stopped", "part", name, zap.Error(err))
			}
		})
	}
	run("multiscaler", p.ms.Run)
	run("metric reconciler", func(ctx context.Context) error { return p.metric.Run(ctx, workers) })
	run("kpa reconciler", func(ctx context.Context) error { return p.kpa.Run(ctx, workers) })
	<-ctx.Done()
	wg.Wait()
	p.pods.Shutdown()
	p.kube.Shutdown()
	p.system.Shutdown()
	p.serving.Shutdown()
	p.net.Shutdown()
}

// ownerIP is the IP of the replica holding key's bucket, from its Lease.
func (a *app) ownerIP(key types.NamespacedName) (string, bool) {
	l, err := a.p.leases.Leases(a.cfg.Namespace).Get(a.set.Owner(key))
	if err != nil || l.Spec.HolderIdentity == nil {
		return "", false
	}
	return bucket.HolderIP(*l.Spec.HolderIdentity)
}

// refreshPeers sets the forwarder's peers: every address behind the autoscaler Service, and every
// bucket holder (a holder that is not Ready yet is still the owner).
func (a *app) refreshPeers() {
	if a.p == nil {
		return
	}
	seen := map[string]bool{}
	if ss, err := a.p.slices.EndpointSlices(a.cfg.Namespace).List(labels.SelectorFromSet(labels.Set{
		discoveryv1.LabelServiceName: a.cfg.ServiceName})); err == nil {
		for _, s := range ss {
			for _, e := range s.Endpoints {
				for _, ip := range e.Addresses {
					seen[ip] = true
				}
			}
		}
	}
	for _, b := range a.set.Names() {
		if l, err := a.p.leases.Leases(a.cfg.Namespace).Get(b); err == nil && l.Spec.HolderIdentity != nil {
			if ip, ok := bucket.HolderIP(*l.Spec.HolderIdentity); ok {
				seen[ip] = true
			}
		}
	}
	ips := make([]string, 0, len(seen))
	for ip := range seen {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	a.fwd.SetPeers(ips)
}
