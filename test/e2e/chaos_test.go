//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/report"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/runner"
	"github.com/thaw-dev/thaw/pkg/lab/host"
	"github.com/thaw-dev/thaw/test/upstream"
)

// Chaos (issue "chaos testing"): a short version of every `thaw chaos run` scenario against the
// components THAW_E2E_COMPONENTS selects (Thaw by default), each fault applied for a few seconds
// under a steady and a cold load through the ingress. A scenario fails on a request lost before the
// faults (the baseline), on a success ratio under its SLO during and after them, and for the
// scenarios whose SLO is 1.0 on any lost request; a never-ready service's failures while it cannot
// start are expected and only logged. THAW_E2E_CHAOS selects scenarios (space-separated names);
// by default activator-kill-all and activator-delete-all (whose recovery alone takes about 40 s each:
// crash back-off, new pods) and apiserver-outage (see chaosLong) run only with THAW_E2E_LONG=1.
const (
	chaosNamespace = "chaos-e2e"
	// Each scenario: 2 s of load, 8 s of faults (every 4 s ± 1 s; held faults 4 s), 6 s of recovery,
	// then the shape again (3 s to settle).
	chaosBefore, chaosDuration, chaosAfter = 2 * time.Second, 8 * time.Second, 6 * time.Second
	chaosPeriod, chaosJitter, chaosHold    = 4 * time.Second, time.Second, 4 * time.Second
)

// chaosLong are the scenarios that run only with THAW_E2E_LONG=1, and the ones that never run here.
var (
	chaosLong = map[string]bool{"activator-kill-all": true, "activator-delete-all": true,
		// Upstream's components and Thaw's alike serve no cold start for about a minute after the
		// apiserver is back (the cause is outside the activator and autoscaler, not yet found): it
		// would fail the suite for a loss neither side can keep. `make chaos` runs it.
		"apiserver-outage": true}
	chaosNever = map[string]string{
		// It needs the components deployed with their fault-injection switch, which the lab's are
		// not; its faults are tested with the components.
		"injected": "needs THAW_FAULT_INJECTION in the Deployments",
	}
)

func TestChaos(t *testing.T) {
	needLab(t, chaosNamespace)
	which := useComponents(t)
	var scenarios []runner.Scenario
	if sel := strings.Fields(os.Getenv("THAW_E2E_CHAOS")); len(sel) > 0 {
		for _, name := range sel {
			sc, ok := runner.ScenarioByName(name)
			if !ok {
				t.Fatalf("THAW_E2E_CHAOS: unknown scenario %q", name)
			}
			scenarios = append(scenarios, sc)
		}
	} else {
		long := os.Getenv("THAW_E2E_LONG") == "1"
		for _, sc := range runner.Scenarios {
			if chaosNever[sc.Name] == "" && (long || !chaosLong[sc.Name]) {
				scenarios = append(scenarios, sc)
			}
		}
	}
	s := lab.stack
	o := runner.Options{
		Client: lab.client, Namespace: chaosNamespace, Image: autoscaleImage, Ingress: s.IngressAddr(),
		Routable: host.ServiceProgrammed, Scenarios: scenarios,
		Duration: chaosDuration, Period: chaosPeriod, Jitter: chaosJitter, Hold: chaosHold,
		Before: chaosBefore, After: chaosAfter, Settle: 3 * time.Second,
		Rate: 5, Sleep: 100 * time.Millisecond, DoomedEvery: 3 * time.Second,
		// Each cold service is poked every 20 s: it is back at zero by then (6 s window, 6 s grace), so
		// every poke is a cold start and user-pod-kill finds a pod scaling up.
		ColdServices: 4, ColdEvery: 5 * time.Second,
		Timeout: 30 * time.Second, Loss: 0.1, Delay: 100 * time.Millisecond,
		// Two of each, so that killing one leaves the other; two buckets, so both autoscalers lead one.
		Shape:      upstream.Shape{Replicas: 2, Buckets: 2},
		Containerd: &fault.Containerd{Ctr: s.Paths.Ctr, Address: s.Lab.Cfg.ContainerdSock()},
		Daemons:    s.Lab.Procs,
		Sides:      []runner.Side{{Name: which}},
		Seed:       uint64(time.Now().UnixNano()),
		Progress:   testWriter{t},
	}
	t0 := time.Now()
	runs, err := runner.Run(context.Background(), o)
	var b strings.Builder
	_ = report.WriteTable(&b, runs)
	t.Logf("%s: %d scenarios in %s (seed %d)\n%s", which, len(runs), time.Since(t0).Round(time.Second), o.Seed, b.String())
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	for _, r := range runs {
		t.Run(r.Scenario, func(t *testing.T) { checkChaosRun(t, r) })
	}
	if len(runs) != len(scenarios) {
		t.Errorf("%d scenarios ran, want %d", len(runs), len(scenarios))
	}
}

func checkChaosRun(t *testing.T, r *report.Run) {
	s := r.Summary
	if r.Err != "" {
		t.Errorf("faults stopped early: %s", r.Err)
	}
	if s.Injections == 0 {
		t.Errorf("no fault was injected: %+v", r.Marks)
	}
	if f := s.Phases[report.Before].Failed; f > 0 {
		t.Errorf("%d requests lost before any fault: the baseline is broken", f)
	}
	if !s.MeetsSLO {
		t.Errorf("success %.4f during and after the faults (%d/%d lost), under the SLO %.2f; lost by class %v, by hop %v",
			s.Exposed.Ratio(), s.Exposed.Failed, s.Exposed.Total, r.SLO, s.Classes, s.Hops)
	}
	if r.SLO == 1 && s.All.Failed > 0 {
		t.Errorf("%d requests lost where none may be: by class %v, by hop %v", s.All.Failed, s.Classes, s.Hops)
	}
	for _, o := range r.Outcomes {
		if o.Failed() && (r.Doomed == "" || o.Target != r.Doomed) {
			t.Logf("lost: %s %s at +%s (%s): %s %d %s %s", o.Stream, o.Target, o.Send.Sub(r.Start).Round(10*time.Millisecond),
				r.Phase(o.Send), o.Class, o.Status, o.Hop, o.Error)
		}
	}
	if r.Doomed != "" {
		t.Logf("never-ready: %d/%d requests failed while it could not start (%v, median %s), served again %s after the undo (-1: not in the run)",
			s.Expected.Failed, s.Expected.Total, s.ExpectedClasses, s.ExpectedP50, s.Recovery)
	}
}

// testWriter sends the runner's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
