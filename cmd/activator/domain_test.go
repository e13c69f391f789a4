package main

import (
	"testing"

	"github.com/thaw-dev/thaw/pkg/activator/statsink"
)

// The autoscaler's address is built on the cluster's domain: CLUSTER_DOMAIN when set (run resolves
// an empty one from /etc/resolv.conf, as upstream).
func TestAutoscalerURLClusterDomain(t *testing.T) {
	for _, tc := range []struct{ domain, ns, want string }{
		{"cluster.local", "", "ws://autoscaler.knative-serving.svc.cluster.local:8080"},
		{"corp.example", "", "ws://autoscaler.knative-serving.svc.corp.example:8080"},
		{"corp.example", "serving", "ws://autoscaler.serving.svc.corp.example:8080"},
	} {
		m := map[string]string{"POD_NAME": "a", "POD_IP": "10.0.0.1", "CLUSTER_DOMAIN": tc.domain, "SYSTEM_NAMESPACE": tc.ns}
		e, err := loadEnv(func(k string) string { return m[k] })
		if err != nil {
			t.Fatal(err)
		}
		if got := statsink.URL(e.SystemNamespace, e.ClusterDomain); got != tc.want {
			t.Errorf("CLUSTER_DOMAIN=%s SYSTEM_NAMESPACE=%s: autoscaler URL %s, want %s", tc.domain, tc.ns, got, tc.want)
		}
	}
}
