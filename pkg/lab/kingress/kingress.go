// Package kingress is a minimal implementation of Knative's
// networking.internal.knative.dev/v1alpha1 Ingress (KIngress): a reconciler
// that turns Ingresses of our class into a route table and marks them ready,
// and a host reverse proxy that routes by Host, path and headers to the
// weighted splits, appending the split headers the activator relies on.
package kingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions"
)

const (
	// IngressClass is the value of config-network's `ingress-class` (and of
	// the networking.knative.dev/ingress.class annotation) this ingress
	// serves by default.
	IngressClass = "thaw.ingress.networking.knative.dev"
	// DefaultNamespace and DefaultServiceName name the in-cluster Service
	// fronting the host proxy.
	DefaultNamespace   = "thaw-system"
	DefaultServiceName = "thaw-ingress"
	// DefaultClusterDomain is Kubernetes' default cluster domain.
	DefaultClusterDomain = "cluster.local"
	// DefaultResyncPeriod re-reconciles everything now and then, healing
	// status edits made by others.
	DefaultResyncPeriod = 10 * time.Minute

	lbRecheck      = time.Minute
	lbRetryMax     = 30 * time.Second
	shutdownGrace  = 10 * time.Second
	readHeaderTime = time.Minute
	idleConnTime   = 5 * time.Minute
)

// Options configure Run. Zero values select the defaults above.
type Options struct {
	// ListenAddr is where the proxy listens, e.g. "10.88.0.1:80".
	ListenAddr string
	// Listener, when set, is used instead of listening on ListenAddr.
	Listener net.Listener
	// AdvertiseIP is the endpoint of the in-cluster Service; defaults to the
	// listener's IP. Loopback cannot be advertised: the Service is then not
	// created and only host clients reach the proxy.
	AdvertiseIP   string
	ClusterDomain string
	// Class is the ingress class to honour.
	Class       string
	Namespace   string
	ServiceName string
	// ResyncPeriod of the informers.
	ResyncPeriod time.Duration
	// IntN picks splits; see ProxyOptions.IntN.
	IntN   func(n int) int
	Logger *zap.SugaredLogger
	// Ready, if set, is called once caches are synced and the proxy serves,
	// with the address it listens on.
	Ready func(addr net.Addr)
}

func (o *Options) defaults() {
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.Class == "" {
		o.Class = IngressClass
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.ServiceName == "" {
		o.ServiceName = DefaultServiceName
	}
	if o.ResyncPeriod == 0 {
		o.ResyncPeriod = DefaultResyncPeriod
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop().Sugar()
	}
}

// Run serves the ingress until ctx ends: informers, one reconcile worker,
// the load balancer Service upkeep and the HTTP proxy.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	// client-go's default of 5 QPS throttles status writes when many
	// Routes change at once (a burst of ksvc creations in the e2e suite).
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	netc, err := netclientset.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("networking client: %w", err)
	}
	return RunWithClients(ctx, kube, netc, opts)
}

// RunWithClients is Run with ready-made clients (tests pass fakes).
func RunWithClients(ctx context.Context, kube kubernetes.Interface, netc netclientset.Interface, opts Options) error {
	opts.defaults()
	log := opts.Logger

	ln := opts.Listener
	if ln == nil {
		if opts.ListenAddr == "" {
			return errors.New("kingress: ListenAddr or Listener is required")
		}
		var err error
		if ln, err = net.Listen("tcp", opts.ListenAddr); err != nil {
			return fmt.Errorf("kingress: listen: %w", err)
		}
	}
	// ln is owned from here on: Serve or the early returns close it.
	lb, err := loadBalancerFor(ln.Addr(), opts)
	if err != nil {
		ln.Close()
		return err
	}
	advertise := lb.validate() == nil
	if !advertise {
		log.Warnw("kingress: not creating the in-cluster Service; only host clients reach the proxy",
			"reason", lb.validate().Error())
	}
	lbStatus := v1alpha1.LoadBalancerIngressStatus{DomainInternal: lb.Domain(opts.ClusterDomain)}

	kubeInf := kubeinformers.NewSharedInformerFactory(kube, opts.ResyncPeriod)
	netInf := netinformers.NewSharedInformerFactory(netc, opts.ResyncPeriod)
	svcInf := kubeInf.Core().V1().Services()
	ingInf := netInf.Networking().V1alpha1().Ingresses()

	proxy := NewProxy(ProxyOptions{
		Services:    svcInf.Lister(),
		SelfDomains: []string{lbStatus.DomainInternal},
		IntN:        opts.IntN,
		Logger:      log,
	})
	rec := NewReconciler(ReconcilerOptions{
		Class:        opts.Class,
		Client:       netc,
		Ingresses:    ingInf.Lister(),
		Services:     svcInf.Lister(),
		Publisher:    proxy,
		LoadBalancer: lbStatus,
		Logger:       log,
	})

	// The queue dedupes keys, so it never holds more than one entry per Ingress.
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "kingress"})
	enqueue := func(obj any) {
		if k, ok := objectKey(obj); ok {
			queue.Add(k)
		}
	}
	if _, err := ingInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		ln.Close()
		return fmt.Errorf("kingress: ingress handler: %w", err)
	}
	onService := func(obj any) {
		if k, ok := objectKey(obj); ok {
			for _, ing := range rec.WaitingOn(k) {
				queue.Add(ing)
			}
		}
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onService,
		UpdateFunc: func(_, obj any) { onService(obj) },
		DeleteFunc: onService,
	}); err != nil {
		ln.Close()
		return fmt.Errorf("kingress: service handler: %w", err)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	// Whatever ends Run (ctx or a server failure) stops every goroutine
	// before wg.Wait.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer kubeInf.Shutdown()
	defer netInf.Shutdown()
	kubeInf.Start(ctx.Done())
	netInf.Start(ctx.Done())

	proto := new(http.Protocols)
	proto.SetHTTP1(true)
	// gRPC clients speak prior-knowledge h2c to the same port.
	proto.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           proxy,
		Protocols:         proto,
		ReadHeaderTimeout: readHeaderTime,
		IdleTimeout:       idleConnTime,
		ErrorLog:          zap.NewStdLog(log.Desugar()),
	}
	serveErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(ln)
	}()
	defer proxy.CloseIdleConnections()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warnw("kingress: proxy shutdown", zap.Error(err))
		}
	}()

	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, ingInf.Informer().HasSynced) {
		// Only the end of ctx stops the wait: a normal shutdown.
		queue.ShutDown()
		return nil
	}

	defer queue.ShutDown()
	wg.Add(1)
	go func() {
		defer wg.Done()
		runWorker(ctx, queue, rec, log)
	}()
	if advertise {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keepLoadBalancer(ctx, kube, lb, log)
		}()
	}

	log.Infow("kingress: serving", "addr", ln.Addr().String(), "class", opts.Class, "domainInternal", lbStatus.DomainInternal)
	if opts.Ready != nil {
		opts.Ready(ln.Addr())
	}

	select {
	case <-ctx.Done():
		return nil
	case err := <-serveErr:
		return fmt.Errorf("kingress: proxy server: %w", err)
	}
}

func loadBalancerFor(addr net.Addr, opts Options) (LoadBalancer, error) {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return LoadBalancer{}, fmt.Errorf("kingress: listener address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return LoadBalancer{}, fmt.Errorf("kingress: listener port %q: %w", port, err)
	}
	ip := opts.AdvertiseIP
	if ip == "" {
		ip = host
	}
	return LoadBalancer{Namespace: opts.Namespace, Name: opts.ServiceName, IP: ip, Port: int32(p)}, nil
}

func runWorker(ctx context.Context, q workqueue.TypedRateLimitingInterface[types.NamespacedName], rec *Reconciler, log *zap.SugaredLogger) {
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		func() {
			defer q.Done(key)
			if err := rec.Reconcile(ctx, key); err != nil {
				if ctx.Err() != nil {
					q.Forget(key)
					return
				}
				log.Warnw("kingress: reconcile failed; will retry", "ingress", key.String(), zap.Error(err))
				q.AddRateLimited(key)
				return
			}
			q.Forget(key)
		}()
	}
}

// keepLoadBalancer creates the in-cluster Service at start (retrying with
// backoff) and re-checks it periodically in case someone deletes it.
func keepLoadBalancer(ctx context.Context, kube kubernetes.Interface, lb LoadBalancer, log *zap.SugaredLogger) {
	delay := time.Second
	for {
		err := EnsureLoadBalancer(ctx, kube, lb)
		next := lbRecheck
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warnw("kingress: ensuring the load balancer Service failed; will retry", "retryIn", delay, zap.Error(err))
			next = delay
			delay = min(delay*2, lbRetryMax)
		} else {
			delay = time.Second
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func objectKey(obj any) (types.NamespacedName, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		ns, name, err := cache.SplitMetaNamespaceKey(d.Key)
		return types.NamespacedName{Namespace: ns, Name: name}, err == nil
	}
	key, err := cache.MetaNamespaceKeyFunc(obj)
	if err != nil {
		return types.NamespacedName{}, false
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	return types.NamespacedName{Namespace: ns, Name: name}, err == nil
}
