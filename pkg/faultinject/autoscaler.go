package faultinject

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// ScaleClient is the autoscaler's /scale client as its PodAutoscaler reconciler uses it.
type ScaleClient interface {
	Replicas(namespace string, ref corev1.ObjectReference) (*int32, error)
	SetReplicas(ctx context.Context, namespace string, ref corev1.ObjectReference, n int32) error
}

// WrapScales returns s with ScaleWriteDelay on each /scale patch. Reads are untouched.
func (i *Injector) WrapScales(s ScaleClient) ScaleClient { return &slowScales{i: i, next: s} }

type slowScales struct {
	i    *Injector
	next ScaleClient
}

func (s *slowScales) Replicas(namespace string, ref corev1.ObjectReference) (*int32, error) {
	return s.next.Replicas(namespace, ref)
}

func (s *slowScales) SetReplicas(ctx context.Context, namespace string, ref corev1.ObjectReference, n int32) error {
	if sp, ok := s.i.fire(ScaleWriteDelay, "target", namespace+"/"+ref.Name, "replicas", n); ok {
		if err := s.i.wait(ctx, sp.Delay); err != nil {
			return err
		}
	}
	return s.next.SetReplicas(ctx, namespace, ref, n)
}

// DropStat reports whether to drop sm, a stat that arrived from an activator (StatDrop). A nil
// Injector (fault injection off) drops nothing.
func (i *Injector) DropStat(sm wire.StatMessage) bool {
	if i == nil {
		return false
	}
	_, ok := i.fire(StatDrop, "revision", sm.Key.String())
	return ok
}

// Deciders is the autoscaler's deciders as the PodAutoscaler reconciler uses them, over the status,
// spec and label types of the multiscaler (type parameters, so this package links none of it).
type Deciders[St comparable, Sp, L any] interface {
	Create(key types.NamespacedName, spec Sp, labels L) St
	Update(key types.NamespacedName, spec Sp) (St, error)
	Get(key types.NamespacedName) (St, Sp, error)
	Delete(key types.NamespacedName)
}

// FreezeDeciders returns d with DecisionFreeze: while it is in force, every status read returns the
// revision's last status read before the freeze (a revision first seen during the freeze keeps its
// first status), so the reconciler holds each revision at its last desired scale. The deciders
// themselves keep running, so the thaw acts on fresh decisions at once. A read whose real status
// differs from the held one counts as one injection.
func FreezeDeciders[St comparable, Sp, L any](i *Injector, d Deciders[St, Sp, L]) Deciders[St, Sp, L] {
	return &frozenDeciders[St, Sp, L]{i: i, next: d, held: map[types.NamespacedName]St{}}
}

type frozenDeciders[St comparable, Sp, L any] struct {
	i    *Injector
	next Deciders[St, Sp, L]

	mu   sync.Mutex
	held map[types.NamespacedName]St // one entry per live decider; removed with it
}

func (f *frozenDeciders[St, Sp, L]) hold(key types.NamespacedName, st St) St {
	_, frozen := f.i.active(DecisionFreeze)
	f.mu.Lock()
	h, had := f.held[key]
	if !frozen || !had {
		f.held[key] = st
		f.mu.Unlock()
		return st
	}
	f.mu.Unlock()
	if h != st {
		f.i.record(DecisionFreeze, "revision", key.String())
	}
	return h
}

func (f *frozenDeciders[St, Sp, L]) Create(key types.NamespacedName, spec Sp, labels L) St {
	return f.hold(key, f.next.Create(key, spec, labels))
}

func (f *frozenDeciders[St, Sp, L]) Update(key types.NamespacedName, spec Sp) (St, error) {
	st, err := f.next.Update(key, spec)
	if err != nil {
		return st, err
	}
	return f.hold(key, st), nil
}

func (f *frozenDeciders[St, Sp, L]) Get(key types.NamespacedName) (St, Sp, error) {
	st, sp, err := f.next.Get(key)
	if err != nil {
		return st, sp, err
	}
	return f.hold(key, st), sp, nil
}

func (f *frozenDeciders[St, Sp, L]) Delete(key types.NamespacedName) {
	f.mu.Lock()
	delete(f.held, key)
	f.mu.Unlock()
	f.next.Delete(key)
}
