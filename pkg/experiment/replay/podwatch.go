package replay

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// revisionLabel is the label Knative puts on a revision's pods.
const revisionLabel = "serving.knative.dev/revision"

// podWatch follows the replay namespace's pods and Deployments on the
// client's clock: the ready pods of each revision right now (how a request
// to upstream's components is classed cold: no ready pod when it was
// sent), the scale-ups from zero of each Deployment, and the ready time of
// every pod (pod-seconds).
type podWatch struct {
	clk   clock.PassiveClock
	start func(ctx context.Context) error

	mu       sync.Mutex
	ready    map[string]map[types.UID]bool // revision → ready, not terminating pods
	replicas map[string]int32              // Deployment → spec.replicas
	scaleUps map[string][]time.Time        // Deployment → when replicas left 0
	spans    map[types.UID]*podSpan
}

// podSpan is the time a pod was ready: from its first Ready to its
// termination (zero: still ready).
type podSpan struct {
	revision   string
	from, till time.Time
}

func newPodWatch(kc kubernetes.Interface, ns string, clk clock.PassiveClock) *podWatch {
	w := &podWatch{clk: clk, ready: map[string]map[types.UID]bool{}, replicas: map[string]int32{},
		scaleUps: map[string][]time.Time{}, spans: map[types.UID]*podSpan{}}
	f := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithNamespace(ns))
	di, pi := f.Apps().V1().Deployments().Informer(), f.Core().V1().Pods().Informer()
	_, _ = di.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.onDeployment(o) },
		UpdateFunc: func(_, o any) { w.onDeployment(o) },
	})
	_, _ = pi.AddEventHandler(cache.ResourceEventHandlerFuncs{
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

func (w *podWatch) onDeployment(o any) {
	d, ok := o.(*appsv1.Deployment)
	if !ok {
		return
	}
	n := int32(1)
	if d.Spec.Replicas != nil {
		n = *d.Spec.Replicas
	}
	now := w.clk.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, seen := w.replicas[d.Name]; seen && old == 0 && n > 0 {
		w.scaleUps[d.Name] = append(w.scaleUps[d.Name], now)
	}
	w.replicas[d.Name] = n
}

func (w *podWatch) onPod(o any, deleted bool) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	rev := p.Labels[revisionLabel]
	now := w.clk.Now()
	// A terminating pod takes no new requests: it no longer counts.
	up := !deleted && p.DeletionTimestamp == nil && kube.PodReady(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	set := w.ready[rev]
	if set == nil {
		set = map[types.UID]bool{}
		w.ready[rev] = set
	}
	sp := w.spans[p.UID]
	switch {
	case up:
		set[p.UID] = true
		if sp == nil {
			w.spans[p.UID] = &podSpan{revision: rev, from: now}
		}
	default:
		delete(set, p.UID)
		if sp != nil && sp.till.IsZero() {
			sp.till = now
		}
	}
}

// Ready is the number of ready pods of revision now.
func (w *podWatch) Ready(revision string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ready[revision])
}

// Replicas is the Deployment's spec.replicas as last seen (-1: unseen).
func (w *podWatch) Replicas(deployment string) int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ok := w.replicas[deployment]
	if !ok {
		return -1
	}
	return n
}

// ScaleUps counts the Deployment's scale-ups from zero within [from, to].
func (w *podWatch) ScaleUps(deployment string, from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, t := range w.scaleUps[deployment] {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

// PodSeconds is the ready time of revision's pods within [from, to].
func (w *podWatch) PodSeconds(revision string, from, to time.Time) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var s float64
	for _, sp := range w.spans {
		if sp.revision != revision {
			continue
		}
		a, b := sp.from, sp.till
		if b.IsZero() || b.After(to) {
			b = to
		}
		if a.Before(from) {
			a = from
		}
		if b.After(a) {
			s += b.Sub(a).Seconds()
		}
	}
	return s
}

// AtZero tells whether the Deployment wants 0 and the revision has no ready
// pod, with a word on what is left.
func (w *podWatch) AtZero(revision, deployment string) (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ok := w.replicas[deployment]
	r := len(w.ready[revision])
	if !ok || n != 0 || r != 0 {
		return false, fmt.Sprintf("%s: replicas %d, %d ready pods", revision, n, r)
	}
	return true, ""
}
