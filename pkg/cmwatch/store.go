package cmwatch

import (
	"fmt"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

// Store holds the live value of one ConfigMap, parsed; it is a Handler. Readers call Load on every use
// (one atomic load), so a ConfigMap edit takes effect at the next decision without a restart. An
// invalid ConfigMap keeps the last good value with one log line; a deleted one reverts to the defaults.
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
