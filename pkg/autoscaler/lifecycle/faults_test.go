package lifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	fakekube "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	fakenet "knative.dev/networking/pkg/client/clientset/versioned/fake"
	fakeserving "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/pkg/faultinject"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// startFaults runs the process with the fault ConfigMap holding data and the switch set to sw.
func startFaults(t *testing.T, sw string, data map[string]string) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	replicas := int32(1)
	h := &harness{
		kube: fakekube.NewSimpleClientset(
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: rev.Namespace, Name: "rev-deployment"},
				Spec: appsv1.DeploymentSpec{Replicas: &replicas}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: faultinject.ConfigMapName}, Data: data},
		),
		serving: fakeserving.NewSimpleClientset(newPA(rev.Name)),
		net:     fakenet.NewSimpleClientset(),
		scales:  &scalePatches{},
		cancel:  cancel,
		done:    make(chan error, 1),
	}
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	dyn.PrependReactor("patch", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if p := a.(k8stesting.PatchAction); p.GetSubresource() == "scale" {
			h.scales.mu.Lock()
			h.scales.patches = append(h.scales.patches, p.GetName()+" "+string(p.GetPatch()))
			h.scales.mu.Unlock()
			return true, nil, nil
		}
		return false, nil, nil
	})
	cfg := Config{StatsAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Namespace: sysNS,
		PodName: podNam, PodIP: podIP, LoggingName: "config-logging", ObservabilityName: "config-observability",
		ShutdownTimeout: 5 * time.Second, FaultInjection: sw}
	d := Deps{Kube: h.kube, Serving: h.serving, Networking: h.net, Dynamic: dyn, Prober: okProber{}}
	ready := make(chan [2]string, 1)
	go func() { h.done <- Run(ctx, cfg, d, ready, zaptest.NewLogger(t).Sugar(), zap.NewAtomicLevel()) }()
	t.Cleanup(func() { _ = h.stop(t) })
	select {
	case h.addrs = <-ready:
	case err := <-h.done:
		h.done <- err
		t.Fatalf("run ended early: %v", err)
	}
	return h
}

// sendStat sends an activator stat that asks for 4 pods (250 requests, target 100 at 70%).
func (h *harness) sendStat(t *testing.T, conn *websocket.Conn) {
	t.Helper()
	frame := wire.MarshalMessages([]wire.StatMessage{{Key: rev,
		Stat: wire.Stat{PodName: "activator-x", AverageConcurrentRequests: 250, RequestCount: 250}}})
	if err := conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		t.Fatal(err)
	}
}

// desired is the PA's desiredScale, -2 while unset.
func (h *harness) desired(ctx context.Context) int32 {
	pa, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
	if err != nil || pa.Status.DesiredScale == nil {
		return -2
	}
	return *pa.Status.DesiredScale
}

// readyForStats waits for the Lease, the SKS and the Metric, so a stat reaches a decider.
func (h *harness) readyForStats(t *testing.T, ctx context.Context) *websocket.Conn {
	t.Helper()
	eventually(t, "Lease", func() bool { return h.holder(t) != "" })
	h.sksFor(t, ctx, rev.Name)
	eventually(t, "Metric status", func() bool {
		m, err := h.serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && m.Status.GetCondition("Ready") != nil
	})
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+h.addrs[0]+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func watchedFaultConfigMap(kube *fakekube.Clientset) bool {
	for _, a := range kube.Actions() {
		if a.GetResource().Resource != "configmaps" {
			continue
		}
		if l, ok := a.(k8stesting.ListAction); ok && strings.Contains(l.GetListRestrictions().Fields.String(), faultinject.ConfigMapName) {
			return true
		}
		if w, ok := a.(k8stesting.WatchAction); ok && strings.Contains(w.GetWatchRestrictions().Fields.String(), faultinject.ConfigMapName) {
			return true
		}
	}
	return false
}

// TestFaultsOffByDefault: without THAW_FAULT_INJECTION=enabled the fault ConfigMap, although present
// and dropping every stat, is never listed nor watched, exports nothing, and stats scale as usual.
func TestFaultsOffByDefault(t *testing.T) {
	for _, sw := range []string{"", "disabled", "yes"} {
		t.Run("switch="+sw, func(t *testing.T) {
			ctx := context.Background()
			h := startFaults(t, sw, map[string]string{string(faultinject.StatDrop): "", string(faultinject.DecisionFreeze): ""})
			conn := h.readyForStats(t, ctx)
			h.sendStat(t, conn)
			eventually(t, "desiredScale 4 from the stat", func() bool { return h.desired(ctx) == 4 })
			if watchedFaultConfigMap(h.kube) {
				t.Error("the fault ConfigMap was listed or watched with the switch off")
			}
			if body := scrape(t, "http://"+h.addrs[1]+"/metrics"); strings.Contains(body, "thaw_fault_") {
				t.Error("fault metrics exported with the switch off")
			}
		})
	}
}

// TestFaultsInjected: with the switch, stats dropped on arrival and frozen decisions keep the PA
// where it was, each counted; deleting the ConfigMap ends them and the stat scales the PA.
func TestFaultsInjected(t *testing.T) {
	ctx := context.Background()
	h := startFaults(t, faultinject.EnvEnabled, map[string]string{string(faultinject.StatDrop): ""})
	conn := h.readyForStats(t, ctx)
	if !watchedFaultConfigMap(h.kube) {
		t.Fatal("the fault ConfigMap is not watched with the switch on")
	}
	metrics := func() string { return scrape(t, "http://"+h.addrs[1]+"/metrics") }
	before := h.desired(ctx)

	h.sendStat(t, conn)
	eventually(t, "a dropped stat counted", func() bool {
		return strings.Contains(metrics(), `thaw_fault_injected_total{component="autoscaler",fault="stat-drop"} 1`)
	})

	// Frozen decisions: the stat reaches the decider, which wants 4, but the PA stays where it was.
	cms := h.kube.CoreV1().ConfigMaps(sysNS)
	cm, err := cms.Get(ctx, faultinject.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{string(faultinject.DecisionFreeze): ""}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "freeze in force", func() bool {
		return strings.Contains(metrics(), `thaw_fault_injection_active{component="autoscaler",fault="decision-freeze"} 1`)
	})
	h.sendStat(t, conn)
	eventually(t, "a frozen decision counted", func() bool {
		return strings.Contains(metrics(), `thaw_fault_injected_total{component="autoscaler",fault="decision-freeze"}`)
	})
	if got := h.desired(ctx); got != before {
		t.Errorf("desiredScale moved to %d during the freeze, want %d", got, before)
	}

	if err := cms.Delete(ctx, faultinject.ConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "desiredScale 4 once the fault is gone", func() bool {
		h.sendStat(t, conn)
		return h.desired(ctx) == 4
	})
}
