package multiscaler

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gather returns name → value of the series of key, and the series count.
func gather(t *testing.T, c prometheus.Collector) (map[string]float64, int) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got, n := map[string]float64{}, 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n++
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			want := map[string]string{"k8s_namespace_name": "ns", "kn_revision_name": "rev",
				"kn_service_name": "svc", "kn_configuration_name": "cfg"}
			for k, v := range want {
				if labels[k] != v {
					t.Errorf("%s: label %s=%q, want %q", mf.GetName(), k, labels[k], v)
				}
			}
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	return got, n
}

func TestMetrics(t *testing.T) {
	h := start(t)
	h.src.set(25, 30, 1)
	h.ms.Create(key, spec, Labels{Service: "svc", Configuration: "cfg"})

	got, _ := gather(t, h.ms)
	if v, ok := got["kn_revision_pods_desired"]; !ok || v != 0 {
		t.Errorf("before a decision kn_revision_pods_desired = %v (present %v), want 0", v, ok)
	}

	h.step(2 * time.Second)
	h.expectRead()
	h.expectInform(true)
	got, n := gather(t, h.ms)
	want := map[string]float64{
		"kn_revision_pods_desired":       3,
		"kn_revision_capacity_excess":    -40,
		"kn_revision_panic_mode":         1,
		"kn_revision_concurrency_stable": 25,
		"kn_revision_concurrency_panic":  30,
		"kn_revision_concurrency_target": 10,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if n != len(want) {
		t.Errorf("%d series, want %d: %v", n, len(want), got)
	}
	h.ms.Delete(key)
	if _, n := gather(t, h.ms); n != 0 {
		t.Errorf("%d series after Delete", n)
	}
}

func TestMetricsRPSNames(t *testing.T) {
	h := start(t)
	h.src.set(25, 30, 1)
	s := spec
	s.ScalingMetric = "rps"
	h.ms.Create(key, s, Labels{Service: "svc", Configuration: "cfg"})
	h.step(2 * time.Second)
	h.expectRead()
	got, _ := gather(t, h.ms)
	for _, k := range []string{"kn_revision_rps_stable_per_second", "kn_revision_rps_panic_per_second", "kn_revision_rps_target_per_second"} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing %s in %v", k, got)
		}
	}
}
