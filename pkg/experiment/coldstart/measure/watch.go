package measure

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// RevisionLabel is the label Knative puts on a revision's pods.
const RevisionLabel = "serving.knative.dev/revision"

// PodInfo is what the pod watch saw of one pod.
type PodInfo struct {
	Name, Revision, IP string
	FirstSeen          time.Time // the watch's first event for the pod
	Ready              time.Time // the watch's first event with Ready=True
	Deleted            bool
}

// Watcher watches the experiment namespace's Deployments and pods: the fallback source of the
// /scale patch (replicas leaving 0), pod Ready, and the state for the waits to zero.
type Watcher struct {
	ns    string
	clk   clock.PassiveClock
	deps  appslisters.DeploymentLister
	pods  corelisters.PodLister
	start func(ctx context.Context) error

	mu       sync.Mutex
	scaleUps map[string][]time.Time // Deployment name → when replicas left 0
	info     map[types.UID]*PodInfo
}

// NewWatcher returns a Watcher of ns; Start runs it.
func NewWatcher(kc kubernetes.Interface, ns string, clk clock.PassiveClock) *Watcher {
	w := &Watcher{ns: ns, clk: clk, scaleUps: map[string][]time.Time{}, info: map[types.UID]*PodInfo{}}
	f := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithNamespace(ns))
	di, pi := f.Apps().V1().Deployments(), f.Core().V1().Pods()
	w.deps, w.pods = di.Lister(), pi.Lister()
	_, _ = di.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: w.onDeployment})
	_, _ = pi.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.onPod(o, false) },
		UpdateFunc: func(_, o any) { w.onPod(o, false) },
		DeleteFunc: func(o any) { w.onPod(o, true) },
	})
	w.start = func(ctx context.Context) error {
		f.Start(ctx.Done())
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("watch of %s in %s did not sync: %w", typ, ns, ctx.Err())
			}
		}
		return nil
	}
	return w
}

// Start begins watching and returns once the caches are filled; the watches end with ctx.
func (w *Watcher) Start(ctx context.Context) error { return w.start(ctx) }

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func (w *Watcher) onDeployment(oldObj, newObj any) {
	o, ok1 := oldObj.(*appsv1.Deployment)
	n, ok2 := newObj.(*appsv1.Deployment)
	if !ok1 || !ok2 || replicas(o) != 0 || replicas(n) == 0 {
		return
	}
	now := w.clk.Now()
	w.mu.Lock()
	w.scaleUps[n.Name] = append(w.scaleUps[n.Name], now)
	w.mu.Unlock()
}

func (w *Watcher) onPod(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	now := w.clk.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	pi := w.info[p.UID]
	if pi == nil {
		pi = &PodInfo{Name: p.Name, Revision: p.Labels[RevisionLabel], FirstSeen: now}
		w.info[p.UID] = pi
	}
	if p.Status.PodIP != "" {
		pi.IP = p.Status.PodIP
	}
	if pi.Ready.IsZero() && kube.PodReady(p) {
		pi.Ready = now
	}
	if deleted {
		pi.Deleted = true
	}
}

// ScaleUp returns the first time at or after since that the watch saw deployment's replicas leave 0.
func (w *Watcher) ScaleUp(deployment string, since time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.scaleUps[deployment] {
		if !t.Before(since) {
			return t, true
		}
	}
	return time.Time{}, false
}

// PodsSince returns the revision's pods first seen at or after since, oldest first.
func (w *Watcher) PodsSince(revision string, since time.Time) []PodInfo {
	w.mu.Lock()
	var out []PodInfo
	for _, pi := range w.info {
		if pi.Revision == revision && !pi.FirstSeen.Before(since) {
			out = append(out, *pi)
		}
	}
	w.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].FirstSeen.Before(out[j].FirstSeen) })
	return out
}

// ReadyAt returns when the watch first saw the revision's pod Ready (zero if not yet).
func (w *Watcher) ReadyAt(revision, pod string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pi := range w.info {
		if pi.Revision == revision && pi.Name == pod {
			return pi.Ready
		}
	}
	return time.Time{}
}

// Forget drops what the watch recorded of the revision's deleted pods (memory stays bounded over long
// runs).
func (w *Watcher) Forget(revision string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for uid, pi := range w.info {
		if pi.Revision == revision && pi.Deleted {
			delete(w.info, uid)
		}
	}
}

// AtZero tells whether the revision's Deployment has replicas 0 and the revision has no pod at all
// (terminating ones included), with a word on what is left when not.
func (w *Watcher) AtZero(revision, deployment string) (bool, string) {
	d, err := w.deps.Deployments(w.ns).Get(deployment)
	if err != nil {
		return false, "deployment " + deployment + ": " + err.Error()
	}
	pods, err := w.pods.Pods(w.ns).List(labels.SelectorFromSet(labels.Set{RevisionLabel: revision}))
	if err != nil {
		return false, err.Error()
	}
	if r := replicas(d); r != 0 || len(pods) > 0 {
		return false, fmt.Sprintf("%s: replicas %d, %d pods", revision, r, len(pods))
	}
	return true, ""
}
