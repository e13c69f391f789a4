package kpa

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/autoscaler/pacer"
)

var other = types.NamespacedName{Namespace: key.Namespace, Name: "other"}

func revPod(rev types.NamespacedName, name string, phase corev1.PodPhase, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: rev.Namespace, Name: name, Labels: map[string]string{revisionLabel: rev.Name},
			CreationTimestamp: metav1.NewTime(t0)},
		Status: corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

// pacedHarness is a revision at zero whose decider wants 2 pods, on a
// cluster already starting as many pods as the pacer's window (1): another
// revision's pod.
func pacedHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.r.pacing.p = pacer.New(pacer.Options{Initial: 1, Min: 1})
	pa := newPA(setActive(corev1.ConditionFalse, reasonNoTraffic, time.Hour), withDesired(0))
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
	h.addMetric(pa)
	h.scales.replicas = ptr32(0)
	h.cold.PokeReceived(key, t0)
	h.cold.Decided(key, t0, 2)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 2, ExcessBurstCapacity: -1})
	h.deciders.Create(key, decider.Spec{}, multiscaler.Labels{})
	h.r.pacing.pod(revPod(other, "other-a", corev1.PodPending, false), false)
	return h
}

// TestPacedWakeWaitsInThePacer: while the cluster is at capacity, neither
// the wake path nor the reconcile scales a revision from zero; when a
// starting pod becomes ready the pacer hands the revision to the wake path,
// which scales it, and the cold-start record says how long it waited.
func TestPacedWakeWaitsInThePacer(t *testing.T) {
	h := pacedHarness(t)
	if err := h.r.wakeOne(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if len(h.scales.patches) != 0 {
		t.Fatalf("patches %v while paced, want none", h.scales.patches)
	}
	if st := h.status(); st == nil || !st.Status.IsActivating() {
		t.Errorf("status while paced: %+v, want Activating (requests are buffered)", st)
	}
	if n := h.r.wake.queue.Len(); n != 0 {
		t.Fatalf("wake queue holds %d while paced: the wake-up waits in the pacer", n)
	}

	h.clock.Step(3 * time.Second)
	h.r.pacing.pod(revPod(other, "other-a", corev1.PodRunning, true), false)
	if n := h.r.wake.queue.Len(); n != 1 {
		t.Fatalf("wake queue holds %d after capacity freed, want the paced revision", n)
	}
	got, _ := h.r.wake.queue.Get()
	h.r.wake.queue.Done(got)
	if got != key {
		t.Fatalf("released %v, want %v", got, key)
	}
	if err := h.r.wakeOne(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.scales.patches, []int32{2}) {
		t.Fatalf("patches %v after release, want [2]", h.scales.patches)
	}
	recs := h.cold.Ring().Snapshot()
	if len(recs) != 1 || recs[0].PacedSeconds != 3 {
		t.Fatalf("records %+v, want one paced 3 s", recs)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h.r)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP thaw_autoscaler_wake_pacing_queue Scale-ups from zero waiting for pod-start capacity.
# TYPE thaw_autoscaler_wake_pacing_queue gauge
thaw_autoscaler_wake_pacing_queue 0
# HELP thaw_autoscaler_wake_pacing_starting_pods Pods asked for and not yet ready, as the wake-up pacer counts them.
# TYPE thaw_autoscaler_wake_pacing_starting_pods gauge
thaw_autoscaler_wake_pacing_starting_pods 2
`), "thaw_autoscaler_wake_pacing_queue", "thaw_autoscaler_wake_pacing_starting_pods"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "thaw_autoscaler_wake_paced_seconds", "thaw_autoscaler_wake_pacing_window",
		"thaw_autoscaler_wake_pacing_baseline_seconds", "thaw_autoscaler_wake_pacing_delivered_rate"); err != nil || n != 4 {
		t.Errorf("pacing metrics: %d, %v; want 4", n, err)
	}
}

// TestPacingNeverHoldsWarmOrOff: a revision scaling from 1 is never paced,
// and with thaw-wake-pacing off nothing is.
func TestPacingNeverHoldsWarmOrOff(t *testing.T) {
	t.Run("warm", func(t *testing.T) {
		h := pacedHarness(t)
		h.scales.replicas = ptr32(1)
		h.deciders.set(key, multiscaler.Status{DesiredScale: 3, ExcessBurstCapacity: -1})
		if err := h.reconcile(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(h.scales.patches, []int32{3}) {
			t.Fatalf("patches %v, want [3]", h.scales.patches)
		}
	})
	t.Run("off", func(t *testing.T) {
		h := pacedHarness(t)
		h.r.wakeOne(context.Background(), key) // paced
		h.cfg.WakePacing = false
		if err := h.r.wakeOne(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(h.scales.patches, []int32{2}) {
			t.Fatalf("patches %v with pacing off, want [2]", h.scales.patches)
		}
	})
}

// TestPacedWakeWithdrawn: a paced revision that no longer wants pods leaves
// the pacer, so it holds no capacity.
func TestPacedWakeWithdrawn(t *testing.T) {
	h := pacedHarness(t)
	h.r.wakeOne(context.Background(), key)
	if st := h.r.pacing.p.Stats(h.clock.Now()); st.Queued != 1 {
		t.Fatalf("queued %d, want 1", st.Queued)
	}
	h.deciders.set(key, multiscaler.Status{DesiredScale: 0, ExcessBurstCapacity: -1})
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if st := h.r.pacing.p.Stats(h.clock.Now()); st.Queued != 0 || st.Starting != 1 {
		t.Fatalf("stats %+v after the decider wants 0, want nothing queued and only the other pod starting", st)
	}
}

// TestPacedWakeForgottenWithItsPA: a deleted PA's wake-up leaves the pacer.
func TestPacedWakeForgottenWithItsPA(t *testing.T) {
	h := pacedHarness(t)
	h.r.wakeOne(context.Background(), key)
	pa, err := h.r.paLister.PodAutoscalers(key.Namespace).Get(key.Name)
	if err != nil {
		t.Fatal(err)
	}
	h.r.pacing.paDeleted(cache.DeletedFinalStateUnknown{Key: key.String(), Obj: pa})
	if st := h.r.pacing.p.Stats(h.clock.Now()); st.Queued != 0 {
		t.Fatalf("queued %d after the PA was deleted, want 0", st.Queued)
	}
}
