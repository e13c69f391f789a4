package faultinject

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/wire"
)

type recScales struct {
	mu     sync.Mutex
	writes []int32
}

func (s *recScales) Replicas(string, corev1.ObjectReference) (*int32, error) { return nil, nil }
func (s *recScales) SetReplicas(_ context.Context, _ string, _ corev1.ObjectReference, n int32) error {
	s.mu.Lock()
	s.writes = append(s.writes, n)
	s.mu.Unlock()
	return nil
}
func (s *recScales) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.writes) }

func TestScaleWriteDelay(t *testing.T) {
	f := newFixture(t, Autoscaler, nil)
	f.apply(t, map[string]string{string(ScaleWriteDelay): "delay=3s"})
	rec := &recScales{}
	sc := f.inj.WrapScales(rec)
	ref := corev1.ObjectReference{Name: "rev-deployment"}

	done := make(chan error, 1)
	go func() { done <- sc.SetReplicas(context.Background(), "ns", ref, 1) }()
	testutil.StepWhenWaiting(t, f.clk, 2*time.Second)
	if rec.count() != 0 {
		t.Fatal("written before the delay")
	}
	f.clk.Step(time.Second)
	if err := <-done; err != nil || rec.count() != 1 {
		t.Fatalf("after the delay: err %v, %d writes", err, rec.count())
	}

	// A write whose context ends while held is not made.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- sc.SetReplicas(ctx, "ns", ref, 2) }()
	testutil.Eventually(t, "the write waits on the clock", f.clk.HasWaiters)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || rec.count() != 1 {
		t.Fatalf("cancelled write: err %v, %d writes", err, rec.count())
	}

	// Cleared: no wait.
	f.inj.Clear()
	if err := sc.SetReplicas(context.Background(), "ns", ref, 3); err != nil || rec.count() != 2 {
		t.Fatalf("without the fault: err %v, %d writes", err, rec.count())
	}
	if got := f.injected(ScaleWriteDelay); got != 2 {
		t.Errorf("counted %v, want 2", got)
	}
}

func TestDropStat(t *testing.T) {
	var off *Injector
	if off.DropStat(wire.StatMessage{}) {
		t.Error("a nil Injector dropped a stat")
	}
	f := newFixture(t, Autoscaler, draws(0.05, 0.5, 0.05, 0.9))
	f.apply(t, map[string]string{string(StatDrop): "p=0.1"})
	var got []bool
	for range 4 {
		got = append(got, f.inj.DropStat(wire.StatMessage{}))
	}
	if want := []bool{true, false, true, false}; !equalBools(got, want) {
		t.Errorf("drops %v, want %v", got, want)
	}
	if n := f.injected(StatDrop); n != 2 {
		t.Errorf("counted %v, want 2", n)
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// status, spec and labels stand in for the multiscaler's types.
type status struct {
	Desired int32
	Panic   bool
}
type spec struct{ Target float64 }
type labels struct{ Service string }

type fakeDeciders struct {
	mu  sync.Mutex
	st  map[types.NamespacedName]status
	del int
}

func (d *fakeDeciders) set(k types.NamespacedName, n int32) {
	d.mu.Lock()
	d.st[k] = status{Desired: n}
	d.mu.Unlock()
}
func (d *fakeDeciders) Create(k types.NamespacedName, _ spec, _ labels) status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st[k]
}
func (d *fakeDeciders) Update(k types.NamespacedName, _ spec) (status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st[k], nil
}
func (d *fakeDeciders) Get(k types.NamespacedName) (status, spec, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.st[k]
	if !ok {
		return status{}, spec{}, errors.New("not found")
	}
	return st, spec{}, nil
}
func (d *fakeDeciders) Delete(k types.NamespacedName) {
	d.mu.Lock()
	delete(d.st, k)
	d.del++
	d.mu.Unlock()
}

func TestDecisionFreeze(t *testing.T) {
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}
	f := newFixture(t, Autoscaler, nil)
	inner := &fakeDeciders{st: map[types.NamespacedName]status{}}
	d := FreezeDeciders[status, spec, labels](f.inj, inner)
	get := func(k types.NamespacedName) int32 {
		t.Helper()
		st, _, err := d.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		return st.Desired
	}

	inner.set(a, 3)
	if got := get(a); got != 3 {
		t.Fatalf("before the freeze: %d, want 3", got)
	}
	f.apply(t, map[string]string{string(DecisionFreeze): "until=2026-12-03T16:00:30Z"})
	steps := []struct {
		name     string
		do       func()
		key      types.NamespacedName
		want     int32
		injected float64
	}{
		{name: "a decides 0: held at 3", do: func() { inner.set(a, 0) }, key: a, want: 3, injected: 1},
		{name: "update also held", do: func() {}, key: a, want: 3, injected: 2},
		{name: "b first seen while frozen keeps its first", do: func() { inner.set(b, 1) }, key: b, want: 1, injected: 2},
		{name: "b decides 5: held at 1", do: func() { inner.set(b, 5) }, key: b, want: 1, injected: 3},
		{name: "a decides 3 again: same as held, not counted", do: func() { inner.set(a, 3) }, key: a, want: 3, injected: 3},
		{name: "expired: real decisions", do: func() { inner.set(a, 0); f.clk.Step(30 * time.Second) }, key: a, want: 0, injected: 3},
	}
	for _, s := range steps {
		s.do()
		var got int32
		if s.name == "update also held" {
			st, err := d.Update(s.key, spec{})
			if err != nil {
				t.Fatal(err)
			}
			got = st.Desired
		} else {
			got = get(s.key)
		}
		if got != s.want {
			t.Errorf("%s: desired %d, want %d", s.name, got, s.want)
		}
		if n := f.injected(DecisionFreeze); n != s.injected {
			t.Errorf("%s: counted %v, want %v", s.name, n, s.injected)
		}
	}
	// A deleted decider forgets what was held.
	d.Delete(b)
	if inner.del != 1 {
		t.Error("Delete did not reach the deciders")
	}
	fd := d.(*frozenDeciders[status, spec, labels])
	if _, ok := fd.held[b]; ok {
		t.Error("a deleted decider's status is still held")
	}
	if _, _, err := d.Get(b); err == nil {
		t.Error("Get of a deleted decider succeeded")
	}
}
