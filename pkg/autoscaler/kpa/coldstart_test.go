package kpa

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// TestScaleFromZeroCompletesColdStart: the /scale patch from 0 completes the
// record the multiscaler opened (poke, decision), at the injected clock's
// time; later patches that do not start from 0 add nothing.
func TestScaleFromZeroCompletesColdStart(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionFalse, reasonNoTraffic, time.Hour), withDesired(0))
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
	h.addMetric(pa)
	h.scales.replicas = ptr32(0)
	// What the multiscaler reports for a poked revision at zero.
	poked := t0.Add(-5 * time.Millisecond)
	h.cold.PokeReceived(key, poked)
	h.cold.Decided(key, poked.Add(time.Millisecond), 2)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 2, ExcessBurstCapacity: -111})
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	got := h.cold.Ring().Snapshot()
	want := coldstart.ScaleRecord{Namespace: key.Namespace, Revision: key.Name, PokeReceived: poked,
		Decided: poked.Add(time.Millisecond), ScaleWritten: t0, DesiredScale: 2}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("records = %+v, want [%+v]", got, want)
	}

	// 2 → 3 is no cold start, even with a record open.
	h.cold.PokeReceived(key, t0)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 3, ExcessBurstCapacity: -111})
	h.clock.Step(time.Second)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if len(h.scales.patches) != 2 || h.scales.patches[1] != 3 {
		t.Fatalf("patches = %v, want [2 3]", h.scales.patches)
	}
	if n := len(h.cold.Ring().Snapshot()); n != 1 {
		t.Fatalf("%d records after a scale from 2, want 1", n)
	}
}

// fakeWindows is the collector for a real multiscaler.
type fakeWindows struct {
	mu     sync.Mutex
	stable float64
}

func (f *fakeWindows) set(v float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stable = v
}

func (f *fakeWindows) StableAndPanicConcurrency(types.NamespacedName, time.Time) (float64, float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stable, f.stable, nil
}

func (f *fakeWindows) StableAndPanicRPS(k types.NamespacedName, now time.Time) (float64, float64, error) {
	return f.StableAndPanicConcurrency(k, now)
}

// TestColdStartRecordAcrossMultiscalerAndKPA drives a real multiscaler and
// the reconciler on one fake clock: the poke of a PA at zero, the decision
// above zero and the /scale patch from 0 make one record.
func TestColdStartRecordAcrossMultiscalerAndKPA(t *testing.T) {
	h := newHarness(t)
	windows := &fakeWindows{}
	ms := multiscaler.New(multiscaler.Options{Clock: h.clock, Metrics: windows,
		Pods:       multiscaler.PodCounterFunc(func(types.NamespacedName) (int, error) { return 0, nil }),
		ColdStarts: h.cold, Logger: zaptest.NewLogger(t).Sugar()})
	h.r.d.Deciders = ms
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ms.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	pa := newPA(setActive(corev1.ConditionFalse, reasonNoTraffic, time.Hour), withDesired(0))
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
	h.addMetric(pa)
	h.scales.replicas = ptr32(0)
	if err := h.reconcile(); err != nil { // creates the decider
		t.Fatal(err)
	}
	desired := func() int32 {
		st, _, err := ms.Get(key)
		if err != nil {
			t.Fatal(err)
		}
		return st.DesiredScale
	}
	// Ticks until the decider settles at zero (no traffic).
	eventually(t, "desired scale 0", func() bool {
		h.clock.Step(2 * time.Second)
		return desired() == 0
	})

	windows.set(5)
	poked := h.clock.Now()
	ms.Poke(key, wire.Stat{AverageConcurrentRequests: 1})
	eventually(t, "the poke's decision", func() bool { return desired() > 0 })
	h.clock.Step(3 * time.Millisecond)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	got := h.cold.Ring().Snapshot()
	if len(got) != 1 {
		t.Fatalf("records = %+v, want 1; patches %v", got, h.scales.patches)
	}
	r := got[0]
	if !r.PokeReceived.Equal(poked) || !r.Decided.Equal(poked) || !r.ScaleWritten.Equal(poked.Add(3*time.Millisecond)) ||
		r.DesiredScale != h.scales.patches[len(h.scales.patches)-1] || r.DesiredScale < 1 {
		t.Fatalf("record %+v, want poke and decision at %v, patch 3 ms later (patches %v)", r, poked, h.scales.patches)
	}
}
