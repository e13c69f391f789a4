package kingress

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
)

// Condition reasons this reconciler writes.
const (
	ReasonInvalidSpec     = "InvalidSpec"
	ReasonServiceNotReady = "ServiceNotReady"
)

// Publisher receives every new route table (the Proxy implements it).
type Publisher interface {
	Publish(*Table)
}

// ReconcilerOptions wire a Reconciler.
type ReconcilerOptions struct {
	// Class is the ingress class we own.
	Class     string
	Client    netclientset.Interface
	Ingresses netlisters.IngressLister
	Services  corelisters.ServiceLister
	Publisher Publisher
	// LoadBalancer is reported as both public and private load balancer.
	LoadBalancer v1alpha1.LoadBalancerIngressStatus
	Logger       *zap.SugaredLogger
}

// Reconciler turns Ingresses of our class into route tables and status.
// Reconcile is meant to be called from one worker; WaitingOn may be called
// concurrently from informer handlers.
type Reconciler struct {
	opts ReconcilerOptions
	self map[string]bool

	mu sync.Mutex
	// routes holds the translated rules of every Ingress we serve.
	routes map[types.NamespacedName][]Rule
	// waiting maps a backend Service to the Ingresses held not-ready on it,
	// so that Service events re-queue just those.
	waiting map[types.NamespacedName]map[types.NamespacedName]struct{}
}

// NewReconciler returns a Reconciler with no routes.
func NewReconciler(opts ReconcilerOptions) *Reconciler {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop().Sugar()
	}
	return &Reconciler{
		opts:    opts,
		self:    selfSet([]string{opts.LoadBalancer.DomainInternal, opts.LoadBalancer.Domain}),
		routes:  make(map[types.NamespacedName][]Rule),
		waiting: make(map[types.NamespacedName]map[types.NamespacedName]struct{}),
	}
}

// Owns reports whether an Ingress carries our class annotation.
func (r *Reconciler) Owns(ing *v1alpha1.Ingress) bool {
	a := ing.GetAnnotations()
	if c, ok := a[networking.IngressClassAnnotationKey]; ok {
		return c == r.opts.Class
	}
	return a[networking.IngressClassAnnotationAltKey] == r.opts.Class
}

// WaitingOn returns the Ingresses held not-ready until svc can be dialled.
func (r *Reconciler) WaitingOn(svc types.NamespacedName) []types.NamespacedName {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]types.NamespacedName, 0, len(r.waiting[svc]))
	for k := range r.waiting[svc] {
		out = append(out, k)
	}
	return out
}

// Reconcile brings the routes and status of one Ingress up to date.
func (r *Reconciler) Reconcile(ctx context.Context, key types.NamespacedName) error {
	ing, err := r.opts.Ingresses.Ingresses(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		r.forget(key, "deleted")
		return nil
	} else if err != nil {
		return fmt.Errorf("get ingress %s: %w", key, err)
	}
	if !r.Owns(ing) {
		// The class may have changed under us: stop serving it.
		r.forget(key, "not our class")
		return nil
	}
	if ing.DeletionTimestamp != nil {
		// No finalizer: our only state is in memory.
		r.forget(key, "being deleted")
		return nil
	}

	want := ing.DeepCopy()
	st := &want.Status
	st.InitializeConditions()
	conds := want.GetConditionSet().Manage(st)

	rules, terr := Translate(ing)
	if terr != nil {
		r.forget(key, "invalid")
		r.opts.Logger.Warnw("kingress: rejecting ingress", "ingress", key.String(), zap.Error(terr))
		conds.MarkFalse(v1alpha1.IngressConditionNetworkConfigured, ReasonInvalidSpec, "%s", terr.Error())
		st.PublicLoadBalancer, st.PrivateLoadBalancer = nil, nil
	} else {
		missing := r.set(key, rules)
		st.MarkNetworkConfigured()
		lb := []v1alpha1.LoadBalancerIngressStatus{r.opts.LoadBalancer}
		if len(missing) == 0 {
			st.MarkLoadBalancerReady(lb, lb)
		} else {
			msg := strings.Join(missing, "; ")
			r.opts.Logger.Infow("kingress: ingress waits for backends", "ingress", key.String(), "reason", msg)
			conds.MarkUnknown(v1alpha1.IngressConditionLoadBalancerReady, ReasonServiceNotReady, "%s", msg)
		}
	}
	st.ObservedGeneration = ing.Generation

	if equality.Semantic.DeepEqual(ing.Status, want.Status) {
		return nil
	}
	if _, err := r.opts.Client.NetworkingV1alpha1().Ingresses(key.Namespace).UpdateStatus(ctx, want, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of ingress %s: %w", key, err)
	}
	return nil
}

// set installs the rules of one Ingress, publishes, and returns why any of
// its backends cannot be dialled yet.
func (r *Reconciler) set(key types.NamespacedName, rules []Rule) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes[key] = rules
	r.unwaitLocked(key)
	var missing []string
	seen := map[types.NamespacedName]bool{}
	for i := range rules {
		for j := range rules[i].Paths {
			for k := range rules[i].Paths[j].Splits {
				s := &rules[i].Paths[j].Splits[k]
				b := s.Backend()
				if seen[b] {
					continue
				}
				seen[b] = true
				if _, err := resolveBackend(r.opts.Services, r.self, s); err != nil {
					missing = append(missing, err.Error())
					if r.waiting[b] == nil {
						r.waiting[b] = map[types.NamespacedName]struct{}{}
					}
					r.waiting[b][key] = struct{}{}
				}
			}
		}
	}
	sort.Strings(missing)
	r.publishLocked()
	return missing
}

// forget drops an Ingress's routes, if any, and publishes.
func (r *Reconciler) forget(key types.NamespacedName, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unwaitLocked(key)
	if _, ok := r.routes[key]; !ok {
		return
	}
	delete(r.routes, key)
	r.opts.Logger.Infow("kingress: removed routes", "ingress", key.String(), "reason", why)
	r.publishLocked()
}

func (r *Reconciler) unwaitLocked(key types.NamespacedName) {
	for svc, ings := range r.waiting {
		delete(ings, key)
		if len(ings) == 0 {
			delete(r.waiting, svc)
		}
	}
}

func (r *Reconciler) publishLocked() {
	var all []Rule
	for _, k := range sortedKeys(r.routes) {
		all = append(all, r.routes[k]...)
	}
	if r.opts.Publisher != nil {
		r.opts.Publisher.Publish(NewTable(all))
	}
}
