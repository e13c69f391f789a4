package endpoints

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/thaw-dev/thaw/pkg/activator/revisions"
)

// Labels the SKS controller puts on the revision services and their Endpoints.
const (
	ServiceTypeLabel  = "networking.internal.knative.dev/serviceType"
	RevisionLabel     = "serving.knative.dev/revision"
	RevisionUIDLabel  = "serving.knative.dev/revisionUID"
	serviceTypePriv   = "Private"
	serviceTypePublic = "Public"

	// PrivateSelector selects the private Endpoints (kube fills them from the revision's pods).
	PrivateSelector = ServiceTypeLabel + "=" + serviceTypePriv + "," + RevisionUIDLabel
	// PublicSelector selects the public Endpoints (the SKS controller writes the activators into them).
	PublicSelector = ServiceTypeLabel + "=" + serviceTypePublic
	// PrivateServiceSelector selects the private Services (ClusterIP fallback).
	PrivateServiceSelector = ServiceTypeLabel + "=" + serviceTypePriv
)

// RevisionSource is what the manager needs from revisions.Store.
type RevisionSource interface {
	Get(ns, name string) (*revisions.Info, error)
	OnUpsert(func(*revisions.Info))
	OnDelete(func(types.NamespacedName))
}

// Manager owns the informers and one watcher goroutine per revision with private Endpoints.
type Manager struct {
	opts Options
	revs RevisionSource
	sink BackendSink

	privInf, pubInf, svcInf cache.SharedIndexInformer
	svcLister               corev1listers.ServiceLister

	mu       sync.Mutex
	ctx      context.Context // set by Run; nil before
	wg       sync.WaitGroup
	watchers map[types.NamespacedName]*watcher
	// waiting keeps the latest private Endpoints of revisions not (yet) in the revision store.
	waiting map[types.NamespacedName]*corev1.Endpoints
	pubIPs  map[types.NamespacedName][]string
}

// NewManager builds a Manager. It registers itself with revs for revision changes; call before revs runs.
func NewManager(kube kubernetes.Interface, revs RevisionSource, sink BackendSink, opts Options) *Manager {
	opts = opts.withDefaults()
	m := &Manager{
		opts:     opts,
		revs:     revs,
		sink:     sink,
		watchers: map[types.NamespacedName]*watcher{},
		waiting:  map[types.NamespacedName]*corev1.Endpoints{},
		pubIPs:   map[types.NamespacedName][]string{},
	}
	factory := func(selector string) informers.SharedInformerFactory {
		return informers.NewSharedInformerFactoryWithOptions(kube, opts.Resync,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	}
	m.privInf = factory(PrivateSelector).Core().V1().Endpoints().Informer()
	m.pubInf = factory(PublicSelector).Core().V1().Endpoints().Informer()
	if opts.MeshMode != MeshDisabled && !opts.PassthroughLB {
		// Only the ClusterIP fallback needs Services.
		svc := factory(PrivateServiceSelector).Core().V1().Services()
		m.svcInf, m.svcLister = svc.Informer(), svc.Lister()
	}
	// AddEventHandler only fails on a stopped informer.
	_, _ = m.privInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    m.privateUpdated,
		UpdateFunc: func(_, obj interface{}) { m.privateUpdated(obj) },
		DeleteFunc: m.privateDeleted,
	})
	_, _ = m.pubInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    m.publicUpdated,
		UpdateFunc: func(_, obj interface{}) { m.publicUpdated(obj) },
		DeleteFunc: m.publicDeleted,
	})
	revs.OnUpsert(m.revisionUpserted)
	revs.OnDelete(m.revisionDeleted)
	return m
}

// Run runs the informers and watchers until ctx ends, then waits for every watcher to stop.
func (m *Manager) Run(ctx context.Context) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	var infWG sync.WaitGroup
	for _, inf := range m.informers() {
		infWG.Add(1)
		go func() { defer infWG.Done(); inf.Run(ctx.Done()) }()
	}
	<-ctx.Done()
	infWG.Wait()
	m.mu.Lock()
	m.watchers = map[types.NamespacedName]*watcher{}
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *Manager) informers() []cache.SharedIndexInformer {
	infs := []cache.SharedIndexInformer{m.privInf, m.pubInf}
	if m.svcInf != nil {
		infs = append(infs, m.svcInf)
	}
	return infs
}

// WaitForSync waits until every informer has its initial list, or ctx ends (false).
func (m *Manager) WaitForSync(ctx context.Context) bool {
	var synced []cache.InformerSynced
	for _, inf := range m.informers() {
		synced = append(synced, inf.HasSynced)
	}
	return cache.WaitForCacheSync(ctx.Done(), synced...)
}

func revisionOf(ep *corev1.Endpoints) (types.NamespacedName, bool) {
	name := ep.Labels[RevisionLabel]
	return types.NamespacedName{Namespace: ep.Namespace, Name: name}, name != ""
}

func asEndpoints(obj interface{}) (*corev1.Endpoints, bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	ep, ok := obj.(*corev1.Endpoints)
	return ep, ok
}

func (m *Manager) privateUpdated(obj interface{}) {
	ep, ok := asEndpoints(obj)
	// Label selectors are applied by the server; check again so a lax watch cannot confuse us.
	if !ok || ep.Labels[ServiceTypeLabel] != serviceTypePriv || ep.Labels[RevisionUIDLabel] == "" {
		return
	}
	rev, ok := revisionOf(ep)
	if !ok {
		m.opts.Logger.Warnf("Private Endpoints %s/%s has no %s label; ignored", ep.Namespace, ep.Name, RevisionLabel)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil || m.ctx.Err() != nil {
		return
	}
	w, ok := m.watchers[rev]
	if !ok {
		info, err := m.revs.Get(rev.Namespace, rev.Name)
		if err != nil {
			// The revision informer may lag behind; revisionUpserted picks this up.
			m.waiting[rev] = ep
			return
		}
		w = m.startWatcherLocked(rev, info)
	}
	w.setDests(endpointsToDests(ep, w.info.PortName()))
}

// startWatcherLocked starts the watcher of rev; m.mu must be held.
func (m *Manager) startWatcherLocked(rev types.NamespacedName, info *revisions.Info) *watcher {
	var prev <-chan struct{}
	if old, ok := m.watchers[rev]; ok {
		old.stop()
		prev = old.done
	}
	w := newWatcher(rev, info, &m.opts, m.sink, m.clusterIPDest)
	m.watchers[rev] = w
	delete(m.waiting, rev)
	ctx := m.ctx
	m.wg.Add(1)
	go func() { defer m.wg.Done(); w.run(ctx, prev) }()
	return w
}

func (m *Manager) privateDeleted(obj interface{}) {
	ep, ok := asEndpoints(obj)
	if !ok {
		return
	}
	rev, ok := revisionOf(ep)
	if !ok {
		return
	}
	m.stopWatcher(rev)
}

func (m *Manager) stopWatcher(rev types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.waiting, rev)
	if w, ok := m.watchers[rev]; ok {
		w.stop()
		delete(m.watchers, rev)
	}
}

func (m *Manager) revisionUpserted(info *revisions.Info) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, running := m.watchers[info.ID]; running || m.ctx == nil || m.ctx.Err() != nil {
		return
	}
	ep, ok := m.waiting[info.ID]
	if !ok {
		// A revision deleted and created again keeps Endpoints that may see no new event.
		ep, ok = m.cachedPrivate(info.ID)
	}
	if !ok {
		return
	}
	w := m.startWatcherLocked(info.ID, info)
	w.setDests(endpointsToDests(ep, info.PortName()))
}

// cachedPrivate finds rev's private Endpoints (named <rev>-private by the SKS controller) in the cache.
func (m *Manager) cachedPrivate(rev types.NamespacedName) (*corev1.Endpoints, bool) {
	obj, ok, err := m.privInf.GetIndexer().GetByKey(rev.Namespace + "/" + rev.Name + "-private")
	if err != nil || !ok {
		return nil, false
	}
	ep, ok := obj.(*corev1.Endpoints)
	if !ok || ep.Labels[RevisionLabel] != rev.Name {
		return nil, false
	}
	return ep, true
}

// revisionDeleted stops routing to a deleted revision even if its Endpoints linger (knative/serving#16679).
func (m *Manager) revisionDeleted(rev types.NamespacedName) {
	m.stopWatcher(rev)
	m.mu.Lock()
	_, had := m.pubIPs[rev]
	delete(m.pubIPs, rev)
	m.mu.Unlock()
	if had {
		m.sink.UpdateActivators(rev, nil)
	}
}

func (m *Manager) publicUpdated(obj interface{}) {
	ep, ok := asEndpoints(obj)
	if !ok || ep.Labels[ServiceTypeLabel] != serviceTypePublic {
		return
	}
	rev, ok := revisionOf(ep)
	if !ok {
		return // some other public service using the same label
	}
	ips := sets.New[string]()
	for _, ss := range ep.Subsets {
		for _, a := range ss.Addresses {
			ips.Insert(a.IP)
		}
	}
	list := sorted(ips)
	m.mu.Lock()
	old, seen := m.pubIPs[rev]
	m.pubIPs[rev] = list
	m.mu.Unlock()
	if seen && slices.Equal(old, list) {
		return
	}
	m.sink.UpdateActivators(rev, list)
}

func (m *Manager) publicDeleted(obj interface{}) {
	ep, ok := asEndpoints(obj)
	if !ok {
		return
	}
	rev, ok := revisionOf(ep)
	if !ok {
		return
	}
	m.mu.Lock()
	_, had := m.pubIPs[rev]
	delete(m.pubIPs, rev)
	m.mu.Unlock()
	if had {
		m.sink.UpdateActivators(rev, nil)
	}
}

// clusterIPDest finds "<rev>-private" and its port named portName.
func (m *Manager) clusterIPDest(rev types.NamespacedName, portName string) (string, error) {
	if m.svcLister == nil {
		return "", fmt.Errorf("no service informer (mesh mode %s)", m.opts.MeshMode)
	}
	svc, err := m.svcLister.Services(rev.Namespace).Get(rev.Name + "-private")
	if err != nil {
		return "", err
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s/%s has no cluster IP", svc.Namespace, svc.Name)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == portName {
			return net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(p.Port))), nil
		}
	}
	return "", fmt.Errorf("service %s/%s has no port %q", svc.Namespace, svc.Name, portName)
}

// endpointsToDests collects "ip:port" of the port named portName, by readiness.
func endpointsToDests(ep *corev1.Endpoints, portName string) dests {
	d := dests{ready: sets.New[string](), notReady: sets.New[string]()}
	for _, ss := range ep.Subsets {
		for _, p := range ss.Ports {
			if p.Name != portName {
				continue
			}
			port := strconv.Itoa(int(p.Port))
			for _, a := range ss.Addresses {
				d.ready.Insert(net.JoinHostPort(a.IP, port))
			}
			for _, a := range ss.NotReadyAddresses {
				d.notReady.Insert(net.JoinHostPort(a.IP, port))
			}
			break
		}
	}
	// An address listed both ways is in transition; trust the not-ready side so it gets probed.
	d.ready = d.ready.Difference(d.notReady)
	return d
}
