package kpa

import (
	"testing"

	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/pkg/network"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
)

// The probed host carries the cluster's domain, not a hard-coded cluster.local.
func TestProbeURLClusterDomain(t *testing.T) {
	for _, tc := range []struct {
		name, domain string
		protocol     networking.ProtocolType
		want         string
	}{
		{"default domain", "cluster.local", networking.ProtocolHTTP1, "http://rev.ns.svc.cluster.local:80/healthz"},
		{"other domain", "corp.example", networking.ProtocolHTTP1, "http://rev.ns.svc.corp.example:80/healthz"},
		{"other domain, h2c", "corp.example", networking.ProtocolH2C, "http://rev.ns.svc.corp.example:81/healthz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Reconciler{d: Deps{ClusterDomain: tc.domain}}
			pa := &autoscalingv1alpha1.PodAutoscaler{}
			pa.Namespace, pa.Name = "ns", "rev"
			pa.Spec.ProtocolType = tc.protocol
			pa.Status.ServiceName = "rev"
			if got := r.probeURL(pa); got != tc.want {
				t.Errorf("probeURL = %s, want %s", got, tc.want)
			}
		})
	}
}

// Without an explicit domain the reconciler takes the one upstream's components take.
func TestDefaultClusterDomain(t *testing.T) {
	if got, want := DefaultClusterDomain(), network.GetClusterDomainName(); got != want || got == "" {
		t.Fatalf("DefaultClusterDomain = %q, want %q", got, want)
	}
	h := newHarness(t)
	if got := h.r.d.ClusterDomain; got != DefaultClusterDomain() {
		t.Fatalf("Deps.ClusterDomain defaulted to %q, want %q", got, DefaultClusterDomain())
	}
}
