package kpa

import (
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
)

// A PA whose bucket another replica holds is left alone: no write, no SKS, its decider dropped. Once
// this replica holds the bucket, the same PA is reconciled as usual.
func TestReconcileOnlyHolder(t *testing.T) {
	h := newHarness(t)
	var holds atomic.Bool
	h.r.d.Owns = func(types.NamespacedName) bool { return holds.Load() }
	pa := newPA()
	h.addPA(pa)
	h.addMetric(pa)
	h.deciders.Create(key, decider.Spec{}, multiscaler.Labels{})
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if n := len(h.serving.Actions()) + len(h.net.Actions()); n != 0 {
		t.Fatalf("%d API writes by a replica without the bucket: %v %v", n, h.serving.Actions(), h.net.Actions())
	}
	if _, _, err := h.deciders.Get(key); err == nil {
		t.Fatal("the decider of another replica's bucket is kept")
	}
	holds.Store(true)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if len(h.serving.Actions())+len(h.net.Actions()) == 0 {
		t.Fatal("the holder wrote nothing")
	}
}
