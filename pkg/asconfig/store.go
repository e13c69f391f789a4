package asconfig

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Store holds the live value of one ConfigMap, parsed. Readers call Load on every use (one atomic load),
// so a ConfigMap edit takes effect at the next decision without a restart.
type Store[T any] struct {
	name   string
	parse  func(map[string]string) (*T, error)
	logger *zap.SugaredLogger
	cur    atomic.Pointer[T]

	mu        sync.Mutex // serialises updates and guards observers
	observers []func(*T)
}

// NewStore makes a Store for the ConfigMap name, starting at the defaults (the parse of an empty map).
func NewStore[T any](name string, parse func(map[string]string) (*T, error), logger *zap.SugaredLogger) (*Store[T], error) {
	def, err := parse(nil)
	if err != nil {
		return nil, fmt.Errorf("defaults of %s: %w", name, err)
	}
	s := &Store[T]{name: name, parse: parse, logger: logger.With("configmap", name)}
	s.cur.Store(def)
	return s, nil
}

// NewAutoscalerStore is a Store of config-autoscaler.
func NewAutoscalerStore(logger *zap.SugaredLogger) *Store[Config] {
	s, err := NewStore(ConfigName, NewConfigFromMap, logger)
	if err != nil {
		panic(err) // the defaults are constants: unreachable unless this package is broken
	}
	return s
}

// NewDeploymentStore is a Store of config-deployment.
func NewDeploymentStore(logger *zap.SugaredLogger) *Store[DeploymentConfig] {
	s, err := NewStore(DeploymentConfigName, NewDeploymentConfigFromMap, logger)
	if err != nil {
		panic(err)
	}
	return s
}

// Name is the ConfigMap's name.
func (s *Store[T]) Name() string { return s.name }

// Load returns the current config. It is shared: treat it as read-only.
func (s *Store[T]) Load() *T { return s.cur.Load() }

// OnChange registers fn, called (synchronously, one update at a time) with each new config after it is
// stored. Register before events flow.
func (s *Store[T]) OnChange(fn func(*T)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observers = append(s.observers, fn)
}

// OnConfigMap applies an added or updated ConfigMap. An invalid one keeps the last good config, with one
// log line naming the problem; it returns the parse error for callers that want it.
func (s *Store[T]) OnConfigMap(cm *corev1.ConfigMap) error {
	if cm == nil || cm.Name != s.name {
		return nil
	}
	return s.apply(cm.Data, "updated")
}

// OnDelete reverts to the defaults, as upstream does when its ConfigMap goes away.
func (s *Store[T]) OnDelete() {
	_ = s.apply(nil, "deleted, using defaults")
}

func (s *Store[T]) apply(data map[string]string, what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.parse(data)
	if err != nil {
		s.logger.Errorw("Invalid ConfigMap ignored; keeping the last good config", zap.Error(err))
		return err
	}
	s.cur.Store(c)
	s.logger.Infow("ConfigMap "+what, "config", fmt.Sprintf("%+v", *c))
	for _, fn := range s.observers {
		fn(c)
	}
	return nil
}

// ConfigMapHandler is what Watch feeds: Store implements it.
type ConfigMapHandler interface {
	Name() string
	OnConfigMap(*corev1.ConfigMap) error
	OnDelete()
}

// Watch runs an informer on the single ConfigMap h.Name() in namespace (a field selector, so only that
// object is listed and watched, with namespace-scoped RBAC), feeding h until ctx ends. It returns once
// the informer has synced, so the store already holds the cluster's value; a missing ConfigMap leaves
// the defaults.
func Watch(ctx context.Context, client kubernetes.Interface, namespace string, h ConfigMapHandler) error {
	name := h.Name()
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	inf := factory.Core().V1().ConfigMaps().Informer()
	apply := func(obj any) {
		// The name check also guards against servers (and fakes) that ignore the field selector.
		if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == name && cm.Namespace == namespace {
			_ = h.OnConfigMap(cm)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == name && cm.Namespace == namespace {
				h.OnDelete()
			}
		},
	}); err != nil {
		return fmt.Errorf("watch ConfigMap %s/%s: %w", namespace, name, err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		factory.Shutdown()
		return fmt.Errorf("watch ConfigMap %s/%s: %w", namespace, name, context.Cause(ctx))
	}
	context.AfterFunc(ctx, factory.Shutdown)
	return nil
}
