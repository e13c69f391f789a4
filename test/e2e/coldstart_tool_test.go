//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/report"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// TestColdstartTool runs `thaw coldstart` with Thaw's components on 2 services at parallelism 1 and 2,
// and checks that every cold start has every phase, external and Thaw's own, in order.
func TestColdstartTool(t *testing.T) {
	needLab(t, "coldstart-e2e")
	ctx := context.Background()
	t.Cleanup(func() {
		up := stack.UpstreamImages()
		if err := lab.stack.Swap(context.Background(), up); err != nil {
			t.Errorf("restoring upstream's components: %v", err)
		} else if err := waitAutoscalerLeads(context.Background(), up["autoscaler"]); err != nil {
			t.Error(err)
		}
	})
	thaw := stack.ThawImages()
	if err := lab.stack.Swap(ctx, thaw); err != nil {
		t.Fatal(err)
	}
	if err := waitAutoscalerLeads(ctx, thaw["autoscaler"]); err != nil {
		t.Fatal(err)
	}
	graceBefore := gracePeriod(t)
	out := t.TempDir()
	cmd := exec.CommandContext(ctx, lab.stack.Opts.Thaw, "coldstart", "--namespace", "coldstart-e2e", "--services", "2",
		"--parallel", "1,2", "--fast-zero", "--out", out)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+lab.stack.Lab.Cfg.Kubeconfig())
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	t0 := time.Now()
	err := cmd.Run()
	t.Logf("thaw coldstart (%s):\n%s", time.Since(t0).Round(time.Second), buf.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"coldstart.csv", "coldstart.svg", "coldstart.png"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "coldstart.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc report.Document
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Samples) != 3 {
		t.Fatalf("%d samples, want 3 (1 at parallel 1, 2 at parallel 2)", len(doc.Samples))
	}
	for _, s := range doc.Samples {
		checkColdStartSample(t, s)
	}
	if t.Failed() {
		csv, _ := os.ReadFile(filepath.Join(out, "coldstart.csv"))
		t.Logf("coldstart.csv:\n%s", csv)
	}
	if got := gracePeriod(t); got != graceBefore {
		t.Errorf("scale-to-zero-grace-period %q after the run, was %q", got, graceBefore)
	}
	nsObj, err := lab.client.Kube.CoreV1().Namespaces().Get(ctx, "coldstart-e2e", metav1.GetOptions{})
	if err == nil && nsObj.DeletionTimestamp == nil {
		t.Error("namespace coldstart-e2e not deleted")
	}
}

func gracePeriod(t *testing.T) string {
	cm, err := lab.client.Kube.CoreV1().ConfigMaps("knative-serving").Get(context.Background(), "config-autoscaler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data["scale-to-zero-grace-period"]
}

// checkColdStartSample asserts that a sample answered 200 and has every instant, in causal order.
func checkColdStartSample(t *testing.T, s report.Sample) {
	t.Helper()
	name := s.Service
	if !s.OK() {
		t.Errorf("%s: status %d error %q", name, s.Status, s.Error)
		return
	}
	if s.ScaleSource != "audit" {
		t.Errorf("%s: /scale time from %q, want the audit log", name, s.ScaleSource)
	}
	order := func(what string, ts ...time.Time) {
		for i, ti := range ts {
			if ti.IsZero() {
				t.Errorf("%s: %s: instant %d missing: %v", name, what, i, ts)
				return
			}
			if i > 0 && ti.Before(ts[i-1]) {
				t.Errorf("%s: %s: instant %d (%s) before %d (%s)", name, what, i, ti.Format(time.RFC3339Nano), i-1, ts[i-1].Format(time.RFC3339Nano))
			}
		}
	}
	order("send ≤ scale received ≤ scale ≤ qp_up ≤ first byte", s.Send, s.ScaleReceived, s.Scale, s.QPUp, s.FirstByte)
	order("qp_up ≤ pod ready", s.QPUp, s.PodReady)
	if s.Thaw == nil || s.Thaw.Warm {
		t.Errorf("%s: no Thaw cold-start timeline (header %+v)", name, s.Thaw)
		return
	}
	th := s.Thaw
	order("Thaw's activator: send ≤ arrival ≤ poke ≤ pod ready ≤ first byte ≤ client first byte",
		s.Send, th.Arrival, th.PokeSent, th.PodReady, th.FirstByte, s.FirstByte)
	if th.Decided.IsZero() {
		t.Errorf("%s: Thaw's autoscaler has no /debug/coldstarts record of this cold start (request→scale %s): the poke did not drive the scale-up",
			name, s.Scale.Sub(s.Send))
	} else {
		order("Thaw's autoscaler: poke sent ≤ decided ≤ scale written", th.PokeSent, th.Decided, th.ScaleWritten)
	}
	for _, p := range report.Phases {
		if _, ok := p.Of(&s); !ok {
			t.Errorf("%s: phase %s not measured", name, p.Name)
		}
	}
}
