package kpa

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgotesting "k8s.io/client-go/testing"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
)

// updates counts update actions on resource in actions.
func updates(actions []clientgotesting.Action, resource string) int {
	n := 0
	for _, a := range actions {
		if a.GetVerb() == "update" && a.GetResource().Resource == resource && a.GetSubresource() == "" {
			n++
		}
	}
	return n
}

// The Metric informer lags behind our own create: the next reconcile's
// create hits AlreadyExists and must carry on with the API's copy.
func TestMetricCreatedButNotInformedYet(t *testing.T) {
	for _, tc := range []struct {
		name        string
		edit        func(*autoscalingv1alpha1.Metric)
		wantErr     bool
		wantUpdates int
	}{
		{name: "same spec", wantUpdates: 0},
		{name: "stale spec is updated", edit: func(m *autoscalingv1alpha1.Metric) { m.Spec.StableWindow = time.Hour }, wantUpdates: 1},
		{name: "not owned", edit: func(m *autoscalingv1alpha1.Metric) { m.OwnerReferences = nil }, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			pa := newPA(setActive(corev1.ConditionTrue, "", time.Hour))
			h.addPA(pa)
			h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour))
			h.deciders.set(key, multiscaler.Status{DesiredScale: -1})
			s := Resolve(h.cfg, h.dcfg, pa)
			m := MakeMetric(pa, &s, scrapeTarget(&s, key.Name+"-private"))
			if tc.edit != nil {
				tc.edit(m)
			}
			// In the API only, not in the informer's cache.
			if _, err := h.serving.AutoscalingV1alpha1().Metrics(key.Namespace).Create(context.Background(), m,
				metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			err := h.reconcile()
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error for a Metric the PA does not own")
				}
				if s, r := cond(h.status(), autoscalingv1alpha1.PodAutoscalerConditionActive); s != corev1.ConditionFalse || r != "NotOwned" {
					t.Errorf("Active = %s/%s, want False/NotOwned", s, r)
				}
				return
			}
			if err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if n := updates(h.serving.Actions(), "metrics"); n != tc.wantUpdates {
				t.Errorf("%d metric updates, want %d", n, tc.wantUpdates)
			}
			got, err := h.serving.AutoscalingV1alpha1().Metrics(key.Namespace).Get(context.Background(), key.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec.StableWindow != time.Minute {
				t.Errorf("metric stable window = %v, want 1m", got.Spec.StableWindow)
			}
			if st := h.status(); st == nil || st.Status.MetricsServiceName != "rev-private" {
				t.Errorf("status not written after the lagging Metric: %+v", st)
			}
		})
	}
}

// The same for the SKS: it exists in the API but the informer has not seen
// it, so the reconciler tries to create it again.
func TestSKSCreatedButNotInformedYet(t *testing.T) {
	for _, tc := range []struct {
		name        string
		mode        nv1alpha1.ServerlessServiceOperationMode
		wantUpdates int
	}{
		{name: "same spec", mode: nv1alpha1.SKSOperationModeProxy, wantUpdates: 0},
		{name: "stale spec is updated", mode: nv1alpha1.SKSOperationModeServe, wantUpdates: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			pa := newPA()
			h.addPA(pa)
			if _, err := h.net.NetworkingV1alpha1().ServerlessServices(key.Namespace).Create(context.Background(),
				MakeSKS(pa, tc.mode, minActivators), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := h.reconcile(); err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if n := updates(h.net.Actions(), "serverlessservices"); n != tc.wantUpdates {
				t.Errorf("%d SKS updates, want %d", n, tc.wantUpdates)
			}
			got, err := h.net.NetworkingV1alpha1().ServerlessServices(key.Namespace).Get(context.Background(), key.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec.Mode != nv1alpha1.SKSOperationModeProxy {
				t.Errorf("SKS mode = %s, want Proxy", got.Spec.Mode)
			}
			st := h.status()
			if st == nil {
				t.Fatal("no status written")
			}
			if c := st.Status.GetCondition(autoscalingv1alpha1.PodAutoscalerConditionSKSReady); c == nil || c.Message != noPrivateServiceName {
				t.Errorf("SKSReady = %+v, want waiting for the private service", c)
			}
		})
	}
}
