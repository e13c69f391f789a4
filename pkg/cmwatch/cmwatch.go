// Package cmwatch is how both binaries follow ConfigMaps of their system namespace: one informer per
// named ConfigMap (a field selector on its name, so only that object is listed, watched and cached,
// under namespace-scoped RBAC), a Handler per ConfigMap called on add, update and delete, and a
// Store that keeps the last good parse of one. It knows neither component.
package cmwatch

import (
	"context"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Handler follows one ConfigMap.
type Handler interface {
	// Name is the ConfigMap's name.
	Name() string
	// OnConfigMap applies the ConfigMap as added or updated. An invalid one must leave the handler as
	// it was, with one log line saying why (Store does both); the error is for callers that want it.
	OnConfigMap(*corev1.ConfigMap) error
	// OnDelete is called when the ConfigMap is deleted.
	OnDelete()
}

// Funcs is a Handler made of functions, for a ConfigMap whose changes are applied rather than stored.
type Funcs struct {
	ConfigMap string
	// Update applies an added or updated ConfigMap; see Handler.OnConfigMap.
	Update func(*corev1.ConfigMap) error
	// Delete, if set, is called on deletion; nil keeps what the last update applied.
	Delete func()
}

func (f Funcs) Name() string                           { return f.ConfigMap }
func (f Funcs) OnConfigMap(cm *corev1.ConfigMap) error { return f.Update(cm) }

func (f Funcs) OnDelete() {
	if f.Delete != nil {
		f.Delete()
	}
}

// Watch starts an informer on each handler's ConfigMap in namespace, feeding the handler until run
// ends, and returns once every informer has synced: each handler has then seen its ConfigMap as the
// cluster holds it (a missing one leaves the handler at its defaults). If wait ends first, the
// informers are stopped and Watch says which ConfigMaps had not synced. Two handlers of one
// ConfigMap are refused: the second would silently double every update.
func Watch(wait, run context.Context, client kubernetes.Interface, namespace string, hs ...Handler) error {
	seen := make(map[string]bool, len(hs))
	for _, h := range hs {
		if seen[h.Name()] {
			return fmt.Errorf("ConfigMap %s/%s has two handlers", namespace, h.Name())
		}
		seen[h.Name()] = true
	}
	// The informers run until run ends, or until Watch fails; stop waits for their goroutines.
	stopCh := make(chan struct{})
	var factories []informers.SharedInformerFactory
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(stopCh)
			for _, f := range factories {
				f.Shutdown()
			}
		})
	}
	var synced []cache.InformerSynced
	for _, h := range hs {
		f, s, err := start(stopCh, client, namespace, h)
		if err != nil {
			stop()
			return err
		}
		factories, synced = append(factories, f), append(synced, s)
	}
	context.AfterFunc(run, stop)
	// Waiting gives up when either context ends.
	waitCtx, cancelWait := context.WithCancel(wait)
	defer cancelWait()
	unlink := context.AfterFunc(run, cancelWait)
	defer unlink()
	allSynced := cache.WaitForCacheSync(waitCtx.Done(), synced...)
	if allSynced && run.Err() == nil {
		return nil
	}
	var missing []string
	for i, s := range synced {
		if !s() {
			missing = append(missing, hs[i].Name())
		}
	}
	if len(missing) == 0 && run.Err() == nil {
		return nil // all synced as the wait ended
	}
	// Nothing runs once run has ended, synced or not.
	stop()
	cause := context.Cause(waitCtx)
	if run.Err() != nil {
		cause = context.Cause(run)
	}
	if len(missing) == 0 {
		return fmt.Errorf("watch ConfigMaps in %s: %w", namespace, cause)
	}
	return fmt.Errorf("watch ConfigMaps in %s: %s not synced: %w", namespace, strings.Join(missing, ", "), cause)
}

// start runs one informer on h's ConfigMap until stopCh closes.
func start(stopCh <-chan struct{}, client kubernetes.Interface, namespace string, h Handler) (informers.SharedInformerFactory, cache.InformerSynced, error) {
	name := h.Name()
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := factory.Core().V1().ConfigMaps().Informer()
	// The name check also guards against servers (and fakes) that ignore the field selector.
	ours := func(obj any) (*corev1.ConfigMap, bool) {
		cm, ok := obj.(*corev1.ConfigMap)
		return cm, ok && cm.Name == name && cm.Namespace == namespace
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if cm, ok := ours(obj); ok {
				_ = h.OnConfigMap(cm)
			}
		},
		UpdateFunc: func(_, obj any) {
			if cm, ok := ours(obj); ok {
				_ = h.OnConfigMap(cm)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if _, ok := ours(obj); ok {
				h.OnDelete()
			}
		},
	}); err != nil {
		return nil, nil, fmt.Errorf("watch ConfigMap %s/%s: %w", namespace, name, err)
	}
	factory.Start(stopCh)
	return factory, inf.HasSynced, nil
}
