//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	servingclient "knative.dev/serving/pkg/client/clientset/versioned"
)

// Faults (issue "bad input and faults"): with the components THAW_E2E_COMPONENTS selects swapped in,
//   - a Metric naming a revision that does not exist is handled as upstream's reconciler does, without
//     a crash or a log line per scrape, and goes away when deleted;
//   - kube-apiserver killed and restarted under light traffic: no request fails, the Deployment never
//     goes to 0, the autoscaler acts on new load and a new ksvc afterwards, and no component restarts;
//   - the leading autoscaler pod deleted with 3 ready pods under load: the next one keeps the scale
//     (upstream's restart in panic) and writes the PodAutoscaler's status at most a few times
//     (upstream #14669 writes it about 4 times per revision).

// Expected figures, with the reasons the bounds are what they are.
const (
	// The revision's target per pod with target-utilization 100%: the load is sized in multiples of it.
	faTarget = 5
	// Light traffic while the apiserver restarts (1 pod), then load for 3 pods.
	faLight, faHeavy = 2, 3 * faTarget
	faSleepMs        = 250
	// How long the apiserver stays down once its process is gone (it is killed, as a crash would).
	faAPIServerDown = 3 * time.Second
	// Thaw's bound on PodAutoscaler writes after the restart: the new leader finds the status it would
	// write already there, so it should write nothing; one write (and its revert) is allowed for a real
	// change of the ready pods while the load runs.
	faMaxStatusWrites = 2
	// Log lines naming a Metric for a missing revision in its first 5 s (see the test).
	faMaxMetricLogLines = 2
)

// statusWatch is how long PodAutoscaler writes are counted after the autoscaler pod is deleted:
// #14669's writes come in the first seconds of the new leader's term, so 30 s by default keeps the
// suite short; THAW_E2E_LONG=1 counts a minute.
func statusWatch() time.Duration {
	if os.Getenv("THAW_E2E_LONG") == "1" {
		return time.Minute
	}
	return 30 * time.Second
}

func TestFaults(t *testing.T) {
	needLab(t, ns)
	which := useComponents(t)
	sc := servingClient(t)
	metricDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(metricDone)
		t.Run("MetricForMissingRevision", func(t *testing.T) { testMetricMissingRevision(t, sc, which) })
	})
	wg.Go(func() {
		t.Run("Restarts", func(t *testing.T) { testRestarts(t, sc, which, metricDone) })
	})
	wg.Wait()
}

// testMetricMissingRevision creates a Metric (as the KPA reconciler would, label and scrape target
// included) for a revision that does not exist. Upstream's Metric reconciler builds a scraper for it,
// which finds no ready pod and so reports no error: the Metric is Ready and nothing is scraped.
func testMetricMissingRevision(t *testing.T, sc *servingclient.Clientset, which string) {
	ctx := context.Background()
	const name = "fa-ghost-00001"
	lead0, err := leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	restarts0, err := podRestarts(ctx, "autoscaler")
	if err != nil {
		t.Fatal(err)
	}
	mc := sc.AutoscalingV1alpha1().Metrics(ns)
	m := &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			"serving.knative.dev/revision": name}},
		Spec: autoscalingv1alpha1.MetricSpec{StableWindow: 60 * time.Second, PanicWindow: 6 * time.Second,
			ScrapeTarget: name + "-private"},
	}
	t0 := time.Now()
	if _, err := mc.Create(ctx, m, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	var got *autoscalingv1alpha1.Metric
	last, err := poll(30*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		got, err = mc.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		c := got.Status.GetCondition("Ready")
		return c != nil && got.Status.ObservedGeneration == got.Generation, fmt.Sprintf("%+v", got.Status)
	})
	if err != nil {
		t.Fatalf("the Metric's status was never written: %s", last)
	}
	c := got.Status.GetCondition("Ready")
	t.Logf("%s: Metric for a missing revision after %s: Ready=%s reason %q message %q", which,
		time.Since(t0).Round(time.Millisecond), c.Status, c.Reason, c.Message)
	if c.Status != "True" {
		t.Errorf("Ready=%s (%s: %s); upstream's reconciler marks it Ready: no pod means nothing to scrape, not an error", c.Status, c.Reason, c.Message)
	}
	// Some scrape periods pass: no log line per scrape, and the status stays.
	time.Sleep(5 * time.Second)
	lines, err := podLogLines(ctx, lead0, t0, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d autoscaler log lines name %s in %s: %q", which, len(lines), name, time.Since(t0).Round(time.Second), lines)
	// Upstream logs "Reconcile succeeded" for the create and for its own status write; one line per
	// 1 s scrape would be at least 4 here.
	if len(lines) > faMaxMetricLogLines {
		t.Errorf("%d log lines about the missing revision, want at most %d", len(lines), faMaxMetricLogLines)
	}
	again, err := mc.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c2 := again.Status.GetCondition("Ready"); c2 == nil || c2.Status != c.Status || c2.Reason != c.Reason {
		t.Errorf("status changed without a change: %+v then %+v", c, c2)
	}
	// Deleted: no finalizer holds it.
	if err := mc.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	last, err = poll(15*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		_, err := mc.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if err != nil {
		t.Errorf("Metric not gone after delete: %s", last)
	}
	lead1, err := leader(ctx)
	restarts1, err2 := podRestarts(ctx, "autoscaler")
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	if lead1 != lead0 || !maps.Equal(restarts0, restarts1) {
		t.Errorf("autoscaler changed: leader %s → %s, restarts %v → %v", lead0, lead1, restarts0, restarts1)
	}
}

// testRestarts runs one ksvc through an apiserver restart and then an autoscaler restart, under load
// throughout.
func testRestarts(t *testing.T, sc *servingclient.Clientset, which string, metricDone <-chan struct{}) {
	s := setupAutoscaleSvc(t, "fa-restarts", asOptions{target: faTarget, annotations: map[string]string{
		"autoscaling.knative.dev/target-utilization-percentage": "100",
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reps := watchReplicas(ctx, t, s.rev+"-deployment")
	pas := watchPA(ctx, t, sc, s.rev)
	tLoad := time.Now()
	load := startTimedLoad(s.host, sleepPath(faSleepMs), faLight)
	var outage [2]time.Time
	t.Run("APIServerRestart", func(t *testing.T) {
		<-metricDone // its checks need the apiserver
		outage = testAPIServerRestart(t, s, load, reps)
	})
	if !t.Failed() {
		t.Run("AutoscalerRestart", func(t *testing.T) { testAutoscalerRestart(t, sc, s, which, reps, pas) })
	}
	load.stop()
	ok, in, out := load.split(outage[0], outage[1])
	t.Logf("%s: load through both restarts: %d ok; %d failed during the apiserver outage %v, %d failed outside it %v",
		which, ok, len(in), in, len(out), out)
	// Nothing on the data path (the ingress and kube-proxy's rules, the activator, the pods) needs the
	// apiserver to forward a request, and the autoscaler restart keeps pods: no request may fail.
	if len(in)+len(out) > 0 {
		t.Errorf("%d requests failed", len(in)+len(out))
	}
	all, status, series := pas.since(tLoad)
	t.Logf("%s: PodAutoscaler over the whole run: %d writes, %d changing the status %s", which, all, status, series)
	t.Logf("%s: Deployment over the whole run %s", which, reps)
	if m := reps.minSpec(tLoad); m < 1 {
		t.Errorf("the Deployment went to %d while traffic flowed: %s", m, reps)
	}
	// The watch resumes after the outage with a fresh Get: a spec write in that gap would be missed.
	if n := reps.unseen(); n > 0 {
		t.Errorf("%d spec changes of the Deployment were not seen by the watch: %s", n, reps)
	}
}

// testAPIServerRestart kills and restarts kube-apiserver under light traffic, then checks that the
// autoscaler acts on what changed after it (more load; a new ksvc) and that nothing restarted. It
// returns the outage, from the kill to /readyz.
func testAPIServerRestart(t *testing.T, s *asSvc, load *timedLoad, reps *replicaLog) [2]time.Time {
	ctx := context.Background()
	as0, err := podRestarts(ctx, "autoscaler")
	act0, err2 := podRestarts(ctx, "activator")
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	time.Sleep(3 * time.Second) // steady traffic before
	rt, err := lab.stack.Lab.RestartAPIServer(ctx, 0, faAPIServerDown, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	outage := [2]time.Time{rt.Stop, rt.Ready}
	t.Logf("apiserver killed in %s, down %s, ready %s after the start: outage %s",
		rt.Stopped.Sub(rt.Stop).Round(time.Millisecond), rt.Started.Sub(rt.Stopped).Round(time.Millisecond),
		rt.Ready.Sub(rt.Started).Round(time.Millisecond), rt.Ready.Sub(rt.Stop).Round(time.Millisecond))
	// The informers recovered if the autoscaler scales up under more load, and reconciles a
	// PodAutoscaler created after the restart (the new ksvc is Ready only once its PA is).
	tUp := time.Now()
	load.add(faHeavy - faLight)
	s2 := setupAutoscaleSvc(t, "fa-after-apiserver", asOptions{})
	t.Logf("new ksvc %s Ready and answering %s after the apiserver was ready", s2.name, time.Since(rt.Ready).Round(time.Millisecond))
	last, err := poll(90*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		d, err := s.deployment(ctx)
		if err != nil {
			return false, err.Error()
		}
		return deref32(d.Spec.Replicas) >= 3 && d.Status.ReadyReplicas >= 3,
			fmt.Sprintf("spec.replicas %d, %d ready", deref32(d.Spec.Replicas), d.Status.ReadyReplicas)
	})
	if err != nil {
		t.Fatalf("no scale-up to 3 pods at concurrency %d after the restart: %s", faHeavy, last)
	}
	t.Logf("scaled to 3 pods %s after the load rose (%s)", time.Since(tUp).Round(time.Millisecond), reps)
	as1, err := podRestarts(ctx, "autoscaler")
	act1, err2 := podRestarts(ctx, "activator")
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	if !maps.Equal(as0, as1) || !maps.Equal(act0, act1) {
		t.Errorf("components restarted: autoscaler %v → %v, activator %v → %v", as0, as1, act0, act1)
	}
	return outage
}

// testAutoscalerRestart deletes the leading autoscaler pod while 3 pods serve the load and checks the
// next leader's first 30 s (a minute when long): the scale holds, and few PodAutoscaler writes.
func testAutoscalerRestart(t *testing.T, sc *servingclient.Clientset, s *asSvc, which string, reps *replicaLog, pas *paLog) {
	ctx := context.Background()
	_, im := components(t)
	// Steady first: PA desired = actual = 3 and the Deployment at 3 ready, for 5 s.
	var since time.Time
	last, err := poll(90*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string) {
		pa, err := sc.AutoscalingV1alpha1().PodAutoscalers(ns).Get(ctx, s.rev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		d, err := s.deployment(ctx)
		if err != nil {
			return false, err.Error()
		}
		st := fmt.Sprintf("PA %d/%d, spec.replicas %d, %d ready", scaleOf(pa.Status.DesiredScale), scaleOf(pa.Status.ActualScale),
			deref32(d.Spec.Replicas), d.Status.ReadyReplicas)
		if scaleOf(pa.Status.DesiredScale) != 3 || scaleOf(pa.Status.ActualScale) != 3 || deref32(d.Spec.Replicas) != 3 || d.Status.ReadyReplicas != 3 {
			since = time.Time{}
			return false, st
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) >= 5*time.Second, st
	})
	if err != nil {
		t.Fatalf("never steady at 3 pods: %s", last)
	}
	old, err := leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tDel := time.Now()
	if err := lab.client.Kube.CoreV1().Pods("knative-serving").Delete(ctx, old, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitAutoscalerLeads(ctx, im["autoscaler"]); err != nil {
		t.Fatal(err)
	}
	tLead := time.Now()
	watchFor := statusWatch()
	time.Sleep(time.Until(tDel.Add(watchFor)))
	all, status, series := pas.since(tDel)
	t.Logf("%s: autoscaler %s deleted; the next one led %s later; in the %s after the delete: %d PodAutoscaler writes, %d changing the status %s",
		which, old, tLead.Sub(tDel).Round(time.Millisecond), watchFor, all, status, series)
	t.Logf("Deployment %s", reps)
	if m := reps.minSpec(tDel); m < 3 {
		t.Errorf("scale dropped to %d after the autoscaler restart (restart in panic keeps the ready pods)", m)
	}
	if which == "thaw" && all > faMaxStatusWrites {
		t.Errorf("%d PodAutoscaler writes after the restart, want at most %d (upstream #14669)", all, faMaxStatusWrites)
	}
	nr, err := podRestarts(ctx, "autoscaler")
	if err != nil {
		t.Fatal(err)
	}
	for p, n := range nr {
		if n > 0 {
			t.Errorf("autoscaler %s restarted %d times", p, n)
		}
	}
}
