package kpa

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
)

func ptr32(i int32) *int32 { return &i }

func TestNoSKSYet(t *testing.T) {
	h := newHarness(t)
	pa := newPA()
	h.addPA(pa)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	sks := h.sksWritten()
	if sks == nil || sks.Spec.Mode != nv1alpha1.SKSOperationModeProxy || sks.Spec.NumActivators != 2 {
		t.Fatalf("SKS = %+v, want Proxy with 2 activators", sks)
	}
	if _, ok := sks.Annotations[asconfig.MetricAnnotationKey]; ok {
		t.Error("SKS copies the metric annotation; upstream filters it out")
	}
	if sks.Annotations[asconfig.ClassAnnotationKey] != asconfig.KPA || sks.Labels[revisionLabel] != key.Name {
		t.Errorf("SKS labels/annotations = %v / %v", sks.Labels, sks.Annotations)
	}
	if !metav1.IsControlledBy(sks, pa) {
		t.Error("SKS not controlled by the PA")
	}
	if sks.Spec.ObjectRef != pa.Spec.ScaleTargetRef || sks.Spec.ProtocolType != "http1" {
		t.Errorf("SKS spec = %+v", sks.Spec)
	}
	st := h.status()
	if st == nil {
		t.Fatal("no status written")
	}
	if s, r := cond(st, autoscalingv1alpha1.PodAutoscalerConditionSKSReady); s != corev1.ConditionUnknown || r != "NotReady" ||
		st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionSKSReady).Message != noPrivateServiceName {
		t.Errorf("SKSReady = %s/%s", s, r)
	}
	if st.Status.DesiredScale == nil || *st.Status.DesiredScale != -1 || *st.Status.ActualScale != 0 {
		t.Errorf("scales = %v/%v, want -1/0", st.Status.DesiredScale, st.Status.ActualScale)
	}
	if h.deciders.status[key] != (multiscaler.Status{}) && len(h.deciders.status) != 0 {
		t.Error("decider created before the SKS has a private service")
	}
	if st.Status.ObservedGeneration != 1 {
		t.Errorf("observedGeneration = %d", st.Status.ObservedGeneration)
	}
}

func TestSKSModeAndActivators(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []paOpt
		decider   multiscaler.Status
		ready     int
		replicas  int32
		wantMode  nv1alpha1.ServerlessServiceOperationMode
		wantNum   int32
		wantWant  int32
		wantPatch []int32
	}{
		{name: "no data yet, proxy", decider: multiscaler.Status{DesiredScale: -1, ExcessBurstCapacity: -89},
			opts: []paOpt{setActive(corev1.ConditionTrue, "", time.Hour)}, ready: 1, replicas: 1,
			wantMode: nv1alpha1.SKSOperationModeProxy, wantNum: 4, wantWant: -1},
		{name: "want>0, EBC<0 → proxy; activators cover ready·total+TBC",
			decider: multiscaler.Status{DesiredScale: 2, ExcessBurstCapacity: -11},
			opts:    []paOpt{setActive(corev1.ConditionTrue, "", time.Hour)}, ready: 2, replicas: 2,
			wantMode: nv1alpha1.SKSOperationModeProxy, wantNum: 5, wantWant: 2}, // ceil((200+211)/100)
		{name: "want>0, EBC≥0 → serve", decider: multiscaler.Status{DesiredScale: 3, ExcessBurstCapacity: 0},
			opts: []paOpt{setActive(corev1.ConditionTrue, "", time.Hour)}, ready: 3, replicas: 3,
			wantMode: nv1alpha1.SKSOperationModeServe, wantNum: 6, wantWant: 3},
		{name: "TBC 0 → always 2 activators", decider: multiscaler.Status{DesiredScale: 10, ExcessBurstCapacity: 0},
			opts: []paOpt{setActive(corev1.ConditionTrue, "", time.Hour),
				withAnn(asconfig.TargetBurstCapacityKey, "0")}, ready: 10, replicas: 10,
			wantMode: nv1alpha1.SKSOperationModeServe, wantNum: 2, wantWant: 10},
		{name: "TBC -1 → proxy; activators cover ready·total only",
			decider: multiscaler.Status{DesiredScale: 5, ExcessBurstCapacity: -1},
			opts: []paOpt{setActive(corev1.ConditionTrue, "", time.Hour),
				withAnn(asconfig.TargetBurstCapacityKey, "-1"), withCC(10)}, ready: 30, replicas: 5,
			wantMode: nv1alpha1.SKSOperationModeProxy, wantNum: 3, wantWant: 5, wantPatch: nil},
		{name: "scale up patches", decider: multiscaler.Status{DesiredScale: 4, ExcessBurstCapacity: 5},
			opts: []paOpt{setActive(corev1.ConditionTrue, "", time.Hour)}, ready: 1, replicas: 1,
			wantMode: nv1alpha1.SKSOperationModeServe, wantNum: 4, wantWant: 4, wantPatch: []int32{4}},
		{name: "restart while inactive, no data: stay proxy",
			decider: multiscaler.Status{DesiredScale: -1, ExcessBurstCapacity: 100},
			opts:    []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, time.Hour)}, ready: 0, replicas: 0,
			wantMode: nv1alpha1.SKSOperationModeProxy, wantNum: 3, wantWant: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			pa := newPA(tc.opts...)
			h.addPA(pa)
			h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
			h.addMetric(pa)
			h.addPods(tc.ready, corev1.PodRunning, true, "p")
			h.deciders.set(key, tc.decider)
			h.scales.replicas = ptr32(tc.replicas)
			if err := h.reconcile(); err != nil {
				t.Fatal(err)
			}
			sks := h.sksWritten()
			mode, num := nv1alpha1.SKSOperationModeProxy, int32(2)
			if sks != nil {
				mode, num = sks.Spec.Mode, sks.Spec.NumActivators
			}
			if mode != tc.wantMode || num != tc.wantNum {
				t.Errorf("SKS mode/activators = %s/%d, want %s/%d", mode, num, tc.wantMode, tc.wantNum)
			}
			if len(h.scales.patches) != len(tc.wantPatch) || (len(tc.wantPatch) > 0 && h.scales.patches[0] != tc.wantPatch[0]) {
				t.Errorf("patches = %v, want %v", h.scales.patches, tc.wantPatch)
			}
			st := h.status()
			if st == nil {
				st = pa
			}
			if got := st.Status.GetDesiredScale(); got != tc.wantWant {
				t.Errorf("desiredScale = %d, want %d", got, tc.wantWant)
			}
			if got := st.Status.GetActualScale(); got != int32(tc.ready) {
				t.Errorf("actualScale = %d, want %d", got, tc.ready)
			}
		})
	}
}

func TestMetricSpec(t *testing.T) {
	for _, tc := range []struct {
		name          string
		opts          []paOpt
		cfg           func(*asconfig.Config)
		stable, panic time.Duration
		target        string
	}{
		{name: "defaults", stable: time.Minute, panic: 6 * time.Second, target: "rev-private"},
		{name: "window annotation", opts: []paOpt{withAnn(asconfig.WindowAnnotationKey, "10s")},
			stable: 10 * time.Second, panic: time.Second, target: "rev-private"},
		{name: "panic pct rounds", opts: []paOpt{withAnn(asconfig.WindowAnnotationKey, "17s"),
			withAnn(asconfig.PanicWindowPercentageAnnotationKey, "20")},
			stable: 17 * time.Second, panic: 3 * time.Second, target: "rev-private"}, // 3.4s → 3s
		{name: "panic at least 1s", opts: []paOpt{withAnn(asconfig.WindowAnnotationKey, "6s"),
			withAnn(asconfig.PanicWindowPercentageAnnotationKey, "1")},
			stable: 6 * time.Second, panic: time.Second, target: "rev-private"},
		{name: "config window", cfg: func(c *asconfig.Config) { c.StableWindow = 2 * time.Minute; c.PanicWindowPercentage = 50 },
			stable: 2 * time.Minute, panic: time.Minute, target: "rev-private"},
		{name: "TBC -1: no scrape target", opts: []paOpt{withAnn(asconfig.TargetBurstCapacityKey, "-1")},
			stable: time.Minute, panic: 6 * time.Second, target: ""},
		{name: "config TBC -1", cfg: func(c *asconfig.Config) { c.TargetBurstCapacity = -1 },
			stable: time.Minute, panic: 6 * time.Second, target: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.cfg != nil {
				tc.cfg(h.cfg)
			}
			pa := newPA(append(tc.opts, setActive(corev1.ConditionTrue, "", time.Hour))...)
			h.addPA(pa)
			h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
			h.deciders.set(key, multiscaler.Status{DesiredScale: -1})
			if err := h.reconcile(); err != nil {
				t.Fatal(err)
			}
			m := h.metricWritten()
			if m == nil {
				t.Fatal("no metric created")
			}
			if m.Spec.StableWindow != tc.stable || m.Spec.PanicWindow != tc.panic || m.Spec.ScrapeTarget != tc.target {
				t.Errorf("metric spec = %+v, want %v/%v/%q", m.Spec, tc.stable, tc.panic, tc.target)
			}
			if !metav1.IsControlledBy(m, pa) || m.Labels[serviceLabel] != "svc" ||
				m.Annotations[asconfig.MetricAnnotationKey] != asconfig.MetricConcurrency {
				t.Errorf("metric meta = %+v", m.ObjectMeta)
			}
			if st := h.status(); st != nil && st.Status.MetricsServiceName != "rev-private" {
				t.Errorf("metricsServiceName = %q", st.Status.MetricsServiceName)
			}
		})
	}
}

func TestScaleBounds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []paOpt
		cfg       func(*asconfig.Config)
		desired   int32
		replicas  int32
		wantPatch int32 // -1: none
		wantWant  int32
	}{
		{name: "min-scale raises", opts: []paOpt{withAnn(asconfig.MinScaleAnnotationKey, "3")},
			desired: 1, replicas: 1, wantPatch: 3, wantWant: 3},
		{name: "max-scale caps", opts: []paOpt{withAnn(asconfig.MaxScaleAnnotationKey, "4")},
			desired: 9, replicas: 1, wantPatch: 4, wantWant: 4},
		{name: "config min-scale", cfg: func(c *asconfig.Config) { c.MinScale = 2 },
			desired: 0, replicas: 2, wantPatch: -1, wantWant: 2},
		{name: "unreachable ignores min", opts: []paOpt{withAnn(asconfig.MinScaleAnnotationKey, "3"), unreachable},
			desired: 2, replicas: 3, wantPatch: 2, wantWant: 2},
		{name: "initial scale until initialized",
			opts:    []paOpt{withAnn(asconfig.InitialScaleAnnotationKey, "5"), notInitialized},
			desired: 1, replicas: 1, wantPatch: 5, wantWant: 5},
		{name: "initial scale ignored when unreachable",
			opts:    []paOpt{withAnn(asconfig.InitialScaleAnnotationKey, "5"), notInitialized, unreachable},
			desired: 1, replicas: 1, wantPatch: -1, wantWant: 1},
		{name: "scale to zero disabled keeps 1", cfg: func(c *asconfig.Config) { c.EnableScaleToZero = false },
			desired: 0, replicas: 3, wantPatch: 1, wantWant: 1},
		{name: "unset replicas count as 1", desired: 1, replicas: -1, wantPatch: -1, wantWant: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.cfg != nil {
				tc.cfg(h.cfg)
			}
			pa := newPA(append([]paOpt{setActive(corev1.ConditionTrue, "", time.Hour)}, tc.opts...)...)
			h.addPA(pa)
			h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeServe, 2, 0))
			h.addMetric(pa)
			h.deciders.set(key, multiscaler.Status{DesiredScale: tc.desired, ExcessBurstCapacity: 10})
			if tc.replicas >= 0 {
				h.scales.replicas = ptr32(tc.replicas)
			}
			if err := h.reconcile(); err != nil {
				t.Fatal(err)
			}
			if tc.wantPatch < 0 {
				if len(h.scales.patches) != 0 {
					t.Errorf("patches = %v, want none", h.scales.patches)
				}
			} else if len(h.scales.patches) != 1 || h.scales.patches[0] != tc.wantPatch {
				t.Errorf("patches = %v, want [%d]", h.scales.patches, tc.wantPatch)
			}
			st := h.status()
			if st == nil {
				st = pa
			}
			if got := st.Status.GetDesiredScale(); got != tc.wantWant {
				t.Errorf("desiredScale = %d, want %d", got, tc.wantWant)
			}
		})
	}
}

func TestScaleToZeroPhases(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       []paOpt
		cfg        func(*asconfig.Config)
		sksMode    nv1alpha1.ServerlessServiceOperationMode
		proxyAgo   time.Duration
		probeOK    bool
		replicas   int32
		ready      int
		wantPatch  int32 // -1: none
		wantActive corev1.ConditionStatus
		wantReason string
		wantAfter  time.Duration // 0: no requeue expected
		wantProbe  bool
		wantAsync  bool
	}{
		{name: "active shorter than the window keeps one pod",
			opts: []paOpt{setActive(corev1.ConditionTrue, "", 20*time.Second)}, sksMode: nv1alpha1.SKSOperationModeServe,
			replicas: 3, ready: 3, wantPatch: 1, wantActive: corev1.ConditionTrue, wantAfter: 40 * time.Second},
		{name: "active for the window → inactive, proxy, no patch",
			opts: []paOpt{setActive(corev1.ConditionTrue, "", 61*time.Second)}, sksMode: nv1alpha1.SKSOperationModeServe,
			replicas: 1, ready: 1, wantPatch: -1, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic},
		{name: "active for the window, already proxy → recheck in 3s",
			opts: []paOpt{setActive(corev1.ConditionTrue, "", 61*time.Second)}, sksMode: nv1alpha1.SKSOperationModeProxy,
			proxyAgo: time.Hour, replicas: 1, ready: 1, wantPatch: -1, wantActive: corev1.ConditionFalse,
			wantReason: reasonNoTraffic, wantAfter: 3 * time.Second},
		{name: "inactive past grace, probe ok → 0",
			opts:    []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 31*time.Second)},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: 31 * time.Second, probeOK: true, replicas: 1, ready: 1,
			wantPatch: 0, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic, wantProbe: true},
		{name: "inactive, probe fails → no patch, async probe",
			opts:    []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 31*time.Second)},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: 31 * time.Second, probeOK: false, replicas: 1, ready: 1,
			wantPatch: -1, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic, wantProbe: true, wantAsync: true},
		{name: "inactive, proxied long enough (fast path) → 0",
			opts:    []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 5*time.Second)},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: 40 * time.Second, probeOK: true, replicas: 1, ready: 1,
			wantPatch: 0, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic, wantProbe: true},
		{name: "inactive, grace not over → wait the rest",
			opts:    []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 5*time.Second)},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: 10 * time.Second, probeOK: true, replicas: 1, ready: 1,
			wantPatch: -1, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic, wantProbe: true,
			wantAfter: 20 * time.Second},
		{name: "retention holds the last pod",
			opts: []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 40*time.Second),
				withAnn(asconfig.ScaleToZeroPodRetentionPeriodKey, "100s")},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: time.Hour, probeOK: true, replicas: 1, ready: 1,
			wantPatch: -1, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic, wantProbe: true,
			wantAfter: 60 * time.Second},
		{name: "retention over → 0",
			opts: []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 101*time.Second),
				withAnn(asconfig.ScaleToZeroPodRetentionPeriodKey, "100s")},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: time.Hour, probeOK: true, replicas: 1, ready: 1,
			wantPatch: 0, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic, wantProbe: true},
		{name: "TBC -1 skips the probe",
			opts: []paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 31*time.Second),
				withAnn(asconfig.TargetBurstCapacityKey, "-1")},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: time.Hour, probeOK: false, replicas: 1, ready: 1,
			wantPatch: 0, wantActive: corev1.ConditionFalse, wantReason: reasonNoTraffic},
		{name: "activating within the timeout: wait",
			opts:    []paOpt{setActive(corev1.ConditionUnknown, reasonQueued, 100*time.Second)},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: time.Hour, replicas: 1, ready: 0,
			wantPatch: -1, wantActive: corev1.ConditionUnknown, wantReason: reasonQueued, wantAfter: 630 * time.Second},
		{name: "activation timed out → 0, TimedOut",
			opts:    []paOpt{setActive(corev1.ConditionUnknown, reasonQueued, 631*time.Second)},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: time.Hour, replicas: 1, ready: 0,
			wantPatch: 0, wantActive: corev1.ConditionFalse, wantReason: reasonTimedOut},
		{name: "progress-deadline annotation shortens the timeout",
			opts: []paOpt{setActive(corev1.ConditionUnknown, reasonQueued, 41*time.Second),
				withAnn(asconfig.ProgressDeadlineAnnotationKey, "10s")},
			sksMode: nv1alpha1.SKSOperationModeProxy, proxyAgo: time.Hour, replicas: 1, ready: 0,
			wantPatch: 0, wantActive: corev1.ConditionFalse, wantReason: reasonTimedOut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.cfg != nil {
				tc.cfg(h.cfg)
			}
			h.prober.ok = tc.probeOK
			pa := newPA(tc.opts...)
			h.addPA(pa)
			h.addSKS(makeSKS(pa, tc.sksMode, 2, tc.proxyAgo))
			h.addMetric(pa)
			h.addPods(tc.ready, corev1.PodRunning, true, "p")
			h.deciders.set(key, multiscaler.Status{DesiredScale: 0, ExcessBurstCapacity: 10})
			h.scales.replicas = ptr32(tc.replicas)
			if err := h.reconcile(); err != nil {
				t.Fatal(err)
			}
			if tc.wantPatch < 0 {
				if len(h.scales.patches) != 0 {
					t.Errorf("patches = %v, want none", h.scales.patches)
				}
			} else if len(h.scales.patches) != 1 || h.scales.patches[0] != tc.wantPatch {
				t.Errorf("patches = %v, want [%d]", h.scales.patches, tc.wantPatch)
			}
			st := h.status()
			if st == nil {
				st = pa
			}
			if s, r := cond(st, autoscalingv1alpha1.PodAutoscalerConditionActive); s != tc.wantActive || r != tc.wantReason {
				t.Errorf("Active = %s/%s, want %s/%s", s, r, tc.wantActive, tc.wantReason)
			}
			if tc.wantAfter > 0 {
				found := false
				for _, a := range h.after {
					found = found || (a.key == key && a.d == tc.wantAfter)
				}
				if !found {
					t.Errorf("requeues = %v, want one after %v", h.after, tc.wantAfter)
				}
			}
			if probed := len(h.prober.urls) > 0; probed != tc.wantProbe {
				t.Errorf("probed = %v, want %v", probed, tc.wantProbe)
			} else if probed && h.prober.urls[0] != "http://rev.ns.svc.cluster.local:80/healthz" {
				t.Errorf("probe URL = %s", h.prober.urls[0])
			}
			if got := h.r.probes.inFlight(key); got != tc.wantAsync {
				t.Errorf("async probe in flight = %v, want %v", got, tc.wantAsync)
			}
		})
	}
}

// The status is written only when it changes: a second reconcile over the
// written status writes nothing (no burst of writes after a restart).
func TestNoWriteWhenUnchanged(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionTrue, "", time.Hour), withDesired(3))
	pa.Status.ActualScale = ptr32(3)
	pa.Status.ObservedGeneration = 1
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeServe, 6, 0))
	h.addMetric(pa)
	h.addPods(3, corev1.PodRunning, true, "p")
	h.scales.replicas = ptr32(3)
	// Restarted autoscaler: the decider has no data yet.
	h.deciders.set(key, multiscaler.Status{DesiredScale: -1, ExcessBurstCapacity: 89})
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if st := h.status(); st != nil {
		t.Fatalf("status written after restart: %+v", st.Status)
	}
	if len(h.scales.patches) != 0 || h.sksWritten() != nil || h.metricWritten() != nil {
		t.Fatalf("writes after restart: patches %v sks %v metric %v", h.scales.patches, h.sksWritten(), h.metricWritten())
	}

	// A real change writes once, and feeding it back writes nothing more.
	h.deciders.set(key, multiscaler.Status{DesiredScale: 4, ExcessBurstCapacity: 89})
	h.scales.replicas = ptr32(4)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	st := h.status()
	if st == nil || st.Status.GetDesiredScale() != 4 {
		t.Fatalf("status = %+v, want desiredScale 4", st)
	}
	if err := h.sf.Autoscaling().V1alpha1().PodAutoscalers().Informer().GetIndexer().Update(st); err != nil {
		t.Fatal(err)
	}
	h.clock.Step(time.Minute)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if st := h.status(); st != nil {
		t.Fatalf("second write of an unchanged status: %+v", st.Status)
	}
}

func TestActivatingToActive(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionFalse, reasonNoTraffic, time.Hour), withDesired(0))
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
	h.addMetric(pa)
	h.scales.replicas = ptr32(0)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 1, ExcessBurstCapacity: -111})
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	st := h.status()
	if s, r := cond(st, autoscalingv1alpha1.PodAutoscalerConditionActive); s != corev1.ConditionUnknown || r != reasonQueued {
		t.Fatalf("Active = %s/%s, want Unknown/Queued", s, r)
	}
	if len(h.scales.patches) != 1 || h.scales.patches[0] != 1 {
		t.Fatalf("patches = %v, want [1]", h.scales.patches)
	}
	select {
	case ev := <-h.rec.Events:
		if !strings.Contains(ev, "from 0 to 1") {
			t.Errorf("event = %q", ev)
		}
	default:
		t.Error("no event for the scale change")
	}
	if c := st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionActive); !c.LastTransitionTime.Inner.Time.Equal(t0) {
		t.Errorf("transition time = %v, want the injected clock's %v", c.LastTransitionTime.Inner, t0)
	}

	// The pod becomes ready: Active, and the target is initialized.
	if err := h.sf.Autoscaling().V1alpha1().PodAutoscalers().Informer().GetIndexer().Update(st); err != nil {
		t.Fatal(err)
	}
	h.addPods(1, corev1.PodRunning, true, "p")
	h.clock.Step(5 * time.Second)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	st = h.status()
	if s, _ := cond(st, autoscalingv1alpha1.PodAutoscalerConditionActive); s != corev1.ConditionTrue {
		t.Fatalf("Active = %s, want True", s)
	}
	if !st.Status.IsScaleTargetInitialized() || !st.IsReady() {
		t.Errorf("initialized = %v, ready = %v", st.Status.IsScaleTargetInitialized(), st.IsReady())
	}
}

func TestPodCountsAndNotReadyPods(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionTrue, "", time.Hour))
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeServe, 2, 0))
	h.addMetric(pa)
	h.addPods(2, corev1.PodRunning, true, "r")
	h.addPods(1, corev1.PodRunning, false, "n")
	h.addPods(1, corev1.PodPending, false, "q")
	h.deciders.set(key, multiscaler.Status{DesiredScale: 2, ExcessBurstCapacity: 5})
	h.scales.replicas = ptr32(4)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	st := h.status()
	if st.Status.GetActualScale() != 2 {
		t.Fatalf("actualScale = %d, want 2 (ready only)", st.Status.GetActualScale())
	}
	if n, _ := h.r.ReadyPods(key); n != 2 {
		t.Fatalf("ReadyPods = %d, want 2", n)
	}
}

func TestInvalidAnnotation(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionTrue, "", time.Hour),
		withAnn(asconfig.WindowAnnotationKey, "0s"),
		withAnn(asconfig.TargetAnnotationKey, "not-a-number"),
		withAnn(asconfig.PanicWindowPercentageAnnotationKey, "500"))
	h.addPA(pa)
	h.addPods(1, corev1.PodRunning, true, "p")
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeServe, 2, 0))
	h.deciders.set(key, multiscaler.Status{DesiredScale: 1, ExcessBurstCapacity: 5})
	h.scales.replicas = ptr32(1)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	st := h.status()
	c := st.Status.GetCondition(ConditionAnnotationsValid)
	if c == nil || c.Status != corev1.ConditionFalse || c.Reason != reasonInvalidAnnotation ||
		!strings.Contains(c.Message, asconfig.WindowAnnotationKey) {
		t.Fatalf("AnnotationsValid = %+v", c)
	}
	// The ConfigMap values are used instead.
	m := h.metricWritten()
	if m.Spec.StableWindow != time.Minute || m.Spec.PanicWindow != 6*time.Second {
		t.Errorf("metric spec = %+v, want the config defaults", m.Spec)
	}
	if spec := h.deciders.spec[key]; spec.StableWindow != time.Minute || spec.TargetValue != 70 {
		t.Errorf("decider spec = %+v", spec)
	}
	// Severity Warning: Ready is not affected.
	if !st.IsReady() {
		t.Errorf("PA not Ready: %+v", st.Status.Conditions)
	}
}

func TestNotOwnedSKS(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionTrue, "", time.Hour))
	h.addPA(pa)
	s := makeSKS(pa, nv1alpha1.SKSOperationModeServe, 2, 0)
	s.OwnerReferences = nil
	h.addSKS(s)
	h.addMetric(pa)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 1, ExcessBurstCapacity: 5})
	h.scales.replicas = ptr32(1)
	if err := h.reconcile(); err == nil {
		t.Fatal("no error for an SKS the PA does not own")
	}
	if s, r := cond(h.status(), autoscalingv1alpha1.PodAutoscalerConditionActive); s != corev1.ConditionFalse || r != "NotOwned" {
		t.Fatalf("Active = %s/%s, want False/NotOwned", s, r)
	}
}

func TestDeletedPARemovesDecider(t *testing.T) {
	h := newHarness(t)
	h.deciders.Create(key, Resolve(h.cfg, h.dcfg, newPA()).Decider, multiscaler.Labels{})
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.deciders.Get(key); err == nil {
		t.Fatal("decider kept after the PA was deleted")
	}
}

func TestDeciderUpdatedOnSpecChange(t *testing.T) {
	h := newHarness(t)
	pa := newPA(setActive(corev1.ConditionTrue, "", time.Hour), withCC(10))
	h.addPA(pa)
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeServe, 2, 0))
	h.addMetric(pa)
	h.scales.replicas = ptr32(1)
	h.deciders.set(key, multiscaler.Status{DesiredScale: 1, ExcessBurstCapacity: 5})
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := h.deciders.spec[key].TotalValue; got != 10 {
		t.Fatalf("TotalValue = %v, want 10", got)
	}
	pa2 := pa.DeepCopy()
	pa2.Spec.ContainerConcurrency = 4
	if err := h.sf.Autoscaling().V1alpha1().PodAutoscalers().Informer().GetIndexer().Update(pa2); err != nil {
		t.Fatal(err)
	}
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := h.deciders.spec[key].TotalValue; got != 4 {
		t.Fatalf("TotalValue after update = %v, want 4", got)
	}
}

func TestAsyncProbeRequeues(t *testing.T) {
	h := newHarness(t)
	h.prober.ok = false
	url := "http://x/healthz"
	if !h.r.probes.offer(key, url) {
		t.Fatal("offer refused")
	}
	if h.r.probes.offer(key, url) {
		t.Fatal("second offer for the same key accepted")
	}
	// Tick until the 45s deadline passes; every tick probes once.
	testutil.StepUntil(t, h.clock, asyncProbePeriod, func() bool { return !h.r.probes.inFlight(key) })
	h.r.probes.wait()
	found := false
	for _, a := range h.after {
		found = found || (a.key == key && a.d == probedRecheck)
	}
	if !found {
		t.Fatalf("requeues = %v, want one after %v", h.after, probedRecheck)
	}
	_ = context.Background
}
