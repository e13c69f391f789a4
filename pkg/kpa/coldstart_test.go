package kpa

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/multiscaler"
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
