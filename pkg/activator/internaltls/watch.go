package internaltls

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Watcher feeds a Store from the API: the Secret SecretName and the
// ConfigMaps labelled TrustBundleLabel of one namespace, each by an informer
// narrowed to exactly those objects (the activator's Role grants get, list and
// watch on Secrets and ConfigMaps of the system namespace).
type Watcher struct {
	store   *Store
	secrets cache.SharedIndexInformer
	bundles cache.SharedIndexInformer
}

// NewWatcher builds the informers; Run starts them.
func NewWatcher(kube kubernetes.Interface, s *Store) *Watcher {
	secrets := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(s.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", SecretName).String()
		})).Core().V1().Secrets().Informer()
	bundles := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(s.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = TrustBundleLabel })).
		Core().V1().ConfigMaps().Informer()
	w := &Watcher{store: s, secrets: secrets, bundles: bundles}

	_, _ = secrets.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { s.SetSecret(asSecret(obj)) },
		UpdateFunc: func(_, obj interface{}) { s.SetSecret(asSecret(obj)) },
		DeleteFunc: func(obj interface{}) {
			if sec := asSecret(obj); sec != nil {
				s.DeleteSecret(sec.Name)
			}
		},
	})
	_, _ = bundles.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { setBundle(s, asConfigMap(obj)) },
		UpdateFunc: func(_, obj interface{}) { setBundle(s, asConfigMap(obj)) },
		DeleteFunc: func(obj interface{}) {
			if cm := asConfigMap(obj); cm != nil {
				s.DeleteBundle(cm.Name)
			}
		},
	})
	return w
}

// Run runs both informers until ctx ends, and returns when they stopped.
func (w *Watcher) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); w.bundles.Run(ctx.Done()) }()
	w.secrets.Run(ctx.Done())
	<-done
}

// WaitForSync waits until both informers listed once, or ctx ends (false).
func (w *Watcher) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), w.secrets.HasSynced, w.bundles.HasSynced)
}

// setBundle applies cm, or forgets it once it lost its label (the API server
// reports that as a deletion to a label-selected watch; not every client does).
func setBundle(s *Store, cm *corev1.ConfigMap) {
	if cm == nil {
		return
	}
	if _, ok := cm.Labels[TrustBundleLabel]; !ok {
		s.DeleteBundle(cm.Name)
		return
	}
	s.SetBundle(cm)
}

func asSecret(obj interface{}) *corev1.Secret {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, _ := obj.(*corev1.Secret)
	return s
}

func asConfigMap(obj interface{}) *corev1.ConfigMap {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	cm, _ := obj.(*corev1.ConfigMap)
	return cm
}
