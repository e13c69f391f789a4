package kpa

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgotesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/flowcontrol"
	clocktesting "k8s.io/utils/clock/testing"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/autoscaler/pacer"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// traffic is a stat showing one request.
var traffic = wire.Stat{PodName: "activator", AverageConcurrentRequests: 1, RequestCount: 1}

// kaHarness is a revision whose PA went inactive at t0 (the activator in the
// path for an hour), with one ready pod and a decider wanting 0.
func kaHarness(t *testing.T, cfg func(*asconfig.Config), opts ...paOpt) (*harness, *autoscalingv1alpha1.PodAutoscaler) {
	t.Helper()
	h := newHarness(t)
	if cfg != nil {
		cfg(h.cfg)
	}
	h.r.keepAlive.lead = func() time.Duration { return 2 * time.Second }
	pa := newPA(append([]paOpt{setActive(corev1.ConditionFalse, reasonNoTraffic, 0)}, opts...)...)
	h.addPA(pa)
	// The activator went into the path as the PA turned inactive.
	h.addSKS(makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Nanosecond))
	h.addMetric(pa)
	h.addPods(1, corev1.PodRunning, true, "p")
	h.deciders.set(key, multiscaler.Status{DesiredScale: 0, ExcessBurstCapacity: 10})
	h.scales.replicas = ptr32(1)
	h.r.keepAlive.sync(pa)
	return h, pa
}

// feedIdle plays, through the stat path, a request, then for each idle
// time a request after it. Each request's stat is one second; the
// revision turns idle keepAliveQuiet after its last stat. The clock ends
// where the revision turned idle after the last request.
func feedIdle(h *harness, idles ...time.Duration) {
	h.t.Helper()
	one := func() {
		h.r.ObserveStat(key, traffic)
		h.clock.Step(keepAliveQuiet)
		h.r.keepAlive.tick(h.clock.Now())
	}
	one()
	for _, d := range idles {
		h.clock.Step(d)
		one()
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// feedIdleUntil is feedIdle timed so that the last request is at end: the
// revision is idle since end, and the clock ends a quiet period later.
func feedIdleUntil(h *harness, end time.Time, idles ...time.Duration) {
	h.t.Helper()
	start := end.Add(-time.Duration(len(idles)) * keepAliveQuiet)
	for _, d := range idles {
		start = start.Add(-d)
	}
	h.clock.SetTime(start)
	feedIdle(h, idles...)
	if got := h.r.keepAlive.revs[key].pol.IdleSince(); !got.Equal(end) {
		h.t.Fatalf("idle since %v, want %v", got, end)
	}
}

// zeroAt reconciles the PA from now, driven by its requeues (and every
// `poll` besides, as informer events would), until the scale target is
// patched or horizon passes; it returns the time of the first patch, from
// t0, and its value (-1: none). The status written goes back into the
// lister.
func zeroAt(h *harness, pa *autoscalingv1alpha1.PodAutoscaler, horizon time.Duration) (time.Duration, int32) {
	h.t.Helper()
	start := h.clock.Now()
	const poll = 10 * time.Second
	for h.clock.Now().Sub(start) <= horizon {
		h.after = nil
		if err := h.reconcile(); err != nil {
			h.t.Fatal(err)
		}
		if st := h.status(); st != nil {
			_ = h.sf.Autoscaling().V1alpha1().PodAutoscalers().Informer().GetIndexer().Update(st)
		}
		if len(h.scales.patches) > 0 {
			return h.clock.Now().Sub(t0), h.scales.patches[0]
		}
		next := poll
		for _, a := range h.after {
			if a.key == key && a.d > 0 && a.d < next {
				next = a.d
			}
		}
		h.clock.Step(next)
	}
	return -1, -1
}

// With nothing set, or the policy switched off (explicitly, or by a bad
// value), the last pod goes exactly when upstream's rules say, retention
// period included, and the PA gets no annotation of Thaw's.
func TestKeepAliveOffIsUpstreamTiming(t *testing.T) {
	offs := []struct {
		name string
		cfg  func(*asconfig.Config)
		opts []paOpt
	}{
		{name: "nothing set"},
		{name: "key off", cfg: func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveOff }},
		{name: "annotation off wins over the key", cfg: func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveLearned },
			opts: []paOpt{withAnn(asconfig.KeepAliveAnnotationKey, "off")}},
		{name: "bad annotation", opts: []paOpt{withAnn(asconfig.KeepAliveAnnotationKey, "sometimes")},
			cfg: func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveLearned }},
		{name: "bad key", cfg: func(c *asconfig.Config) {
			bad, _ := asconfig.NewConfigFromMap(map[string]string{asconfig.KeyThawKeepAlive: "yes"})
			*c = *bad
		}},
	}
	for _, tc := range []struct {
		name string
		opts []paOpt
		want time.Duration
	}{
		{name: "grace", want: 30 * time.Second},
		{name: "retention 100s", opts: []paOpt{withAnn(asconfig.ScaleToZeroPodRetentionPeriodKey, "100s")}, want: 100 * time.Second},
		{name: "retention 10m", opts: []paOpt{withAnn(asconfig.ScaleToZeroPodRetentionPeriodKey, "10m")}, want: 10 * time.Minute},
	} {
		var base time.Duration
		for i, off := range offs {
			t.Run(tc.name+"/"+off.name, func(t *testing.T) {
				h, pa := kaHarness(t, off.cfg, append(slices.Clone(tc.opts), off.opts...)...)
				// Traffic that would teach a policy: it must not matter.
				h.clock.SetTime(t0.Add(-time.Hour))
				feedIdle(h, repeat(20*time.Second, 30)...)
				h.clock.SetTime(t0)
				at, to := zeroAt(h, pa, time.Hour)
				if i == 0 {
					base = at
					// Upstream's rules, requeue by requeue: the grace
					// period counts from the activator's arrival (a
					// nanosecond before t0 here).
					if to != 0 || at < tc.want-time.Second || at > tc.want {
						t.Errorf("nothing set: scaled to %d at inactive+%v, want 0 at +%v", to, at, tc.want)
					}
				} else if at != base || to != 0 {
					t.Errorf("scaled to %d at inactive+%v, want 0 at +%v as with nothing set", to, at, base)
				}
				for _, a := range h.serving.Actions() {
					if a.GetVerb() == "patch" {
						t.Errorf("PA patched with the policy off: %v", a)
					}
				}
				if n := testutil.CollectAndCount(h.r, "thaw_autoscaler_keepalive_prewarm_seconds"); n != 0 {
					t.Errorf("%d keep-alive series with the policy off", n)
				}
			})
		}
	}
}

// With the policy on, the last pod stays for the learned keep-alive
// (instead of the grace and retention periods), and goes when it ends.
func TestKeepAliveHoldsLearnedWindow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  asconfig.KeepAliveMode
		idles []time.Duration
		// want is when the pod goes, from the moment the revision turned
		// idle (t0 here).
		want time.Duration
	}{{
		// Hybrid: 95 idle times in bin 0 and 5 in bin 4: no pre-warm
		// wait, keep until (4+1) min + 10%.
		name: "hybrid, keep 5.5 min", mode: asconfig.KeepAliveHybrid,
		idles: append(repeat(30*time.Second, 95), repeat(4*time.Minute+30*time.Second, 5)...),
		want:  330 * time.Second,
	}, {
		// No history yet: the fallback keeps the pod 10 minutes.
		name: "hybrid, no history: fallback 10 min", mode: asconfig.KeepAliveHybrid,
		idles: nil, want: 10 * time.Minute,
	}, {
		// Thaw's cost windows: idle times of 100 s, just past the hold
		// (stable window and grace, 90 s), are cheaper to wait out with
		// the pod than to start a pod for: keep to the bin's end.
		name: "learned, keep to 2 min", mode: asconfig.KeepAliveLearned,
		idles: repeat(100*time.Second, 30), want: 2 * time.Minute,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h, pa := kaHarness(t, nil, withAnn(asconfig.KeepAliveAnnotationKey, string(tc.mode)),
				withAnn(asconfig.ScaleToZeroPodRetentionPeriodKey, "30m"))
			feedIdleUntil(h, t0, tc.idles...)
			w := h.r.keepAlive.revs[key].pol.Windows()
			if w.PreWarm != 0 {
				t.Fatalf("windows %+v: want no pre-warm wait", w)
			}
			at, to := zeroAt(h, pa, time.Hour)
			if to != 0 || at != tc.want {
				t.Errorf("scaled to %d at idle+%v, want 0 at +%v (windows %+v)", to, at, tc.want, w)
			}
		})
	}
}

// A revision at zero is scaled to one a pod start before the learned
// pre-warm window, and the pod is then kept to the window's end.
func TestKeepAlivePreWarm(t *testing.T) {
	h, pa := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveHybrid })
	// Every 10m20s: pre-warm at 9 min after idle, keep to 12m06s.
	feedIdleUntil(h, t0, repeat(10*time.Minute+20*time.Second, 20)...)

	// Inactive: the pod goes after the grace period (the policy wants none
	// for 9 minutes).
	at, to := zeroAt(h, pa, time.Hour)
	if at != 30*time.Second-time.Nanosecond || to != 0 {
		t.Fatalf("scaled to %d at idle+%v, want 0 at +30s", to, at)
	}
	h.scales.patches = nil
	h.podInf.Core().V1().Pods().Informer().GetIndexer().Replace(nil, "")
	// At zero: a reconcile asks to come back 2 s (a pod start) ahead.
	h.clock.Step(10 * time.Second)
	at, to = zeroAt(h, pa, time.Hour)
	if want := 9*time.Minute - 2*time.Second; at != want || to != 1 {
		t.Errorf("pre-warm: scaled to %d at idle+%v, want 1 at +%v", to, at, want)
	}
	if got := h.r.keepAlive.revs[key].prewarms; got != 1 {
		t.Errorf("%d pre-warms counted, want 1", got)
	}
	if n := testutil.CollectAndCount(h.r, "thaw_autoscaler_keepalive_prewarms_total", "thaw_autoscaler_keepalive_prewarm_seconds",
		"thaw_autoscaler_keepalive_keepalive_seconds", "thaw_autoscaler_keepalive_idle_times"); n != 4 {
		t.Errorf("%d keep-alive series of the revision, want 4", n)
	}
}

// A real scale-up is never held back: at zero inside a window where the
// policy wants no pod, and with a pod kept, the decider's wish applies at
// once.
func TestKeepAliveNeverDelaysScaleUp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int32
	}{{"from zero", 0}, {"with the kept pod", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveHybrid })
			feedIdle(h, repeat(10*time.Minute+20*time.Second, 20)...)
			h.scales.replicas = ptr32(tc.replicas)
			h.deciders.set(key, multiscaler.Status{DesiredScale: 3, ExcessBurstCapacity: -1})
			if err := h.reconcile(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(h.scales.patches, []int32{3}) {
				t.Errorf("patches %v, want [3] at once", h.scales.patches)
			}
		})
	}
}

// The stat path: requests make the revision busy and are counted; a stat
// without traffic does nothing; two quiet seconds make it idle; the idle
// time is recorded at the next traffic.
func TestKeepAliveStatPath(t *testing.T) {
	h, _ := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveLearned })
	pol := h.r.keepAlive.revs[key].pol
	h.r.ObserveStat(key, wire.Stat{AverageConcurrentRequests: 0.5, RequestCount: 2.5})
	h.r.ObserveStat(other, traffic) // no policy: ignored
	if !pol.IsBusy() || pol.Snapshot().Requests != 2 {
		t.Fatalf("busy %v, requests %d; want busy, 2 (the half waits)", pol.IsBusy(), pol.Snapshot().Requests)
	}
	h.clock.Step(time.Second)
	h.r.ObserveStat(key, wire.Stat{RequestCount: 3, ProxiedRequestCount: 2.5}) // one more with the half
	if r := pol.Snapshot().Requests; r != 3 {
		t.Errorf("requests %d, want 3 (proxied ones are the activator's)", r)
	}
	h.clock.Step(time.Second)
	h.r.ObserveStat(key, wire.Stat{PodName: "p"}) // no traffic
	if idled := h.r.keepAlive.tick(h.clock.Now()); len(idled) != 0 || !pol.IsBusy() {
		t.Errorf("idle after 1 s: %v", idled)
	}
	h.clock.Step(time.Second)
	if idled := h.r.keepAlive.tick(h.clock.Now()); !slices.Equal(idled, []types.NamespacedName{key}) || pol.IsBusy() {
		t.Errorf("after 2 quiet seconds: idled %v, busy %v", idled, pol.IsBusy())
	}
	h.clock.Step(3 * time.Minute)
	h.r.ObserveStat(key, traffic)
	if in, _ := pol.Samples(); in != 1 || pol.Snapshot().Counts[0] != [2]uint32{3, 1} {
		t.Errorf("idle times %v, want one of 3 min", pol.Snapshot().Counts)
	}
	for _, bad := range []wire.Stat{{AverageConcurrentRequests: math.NaN()}, {RequestCount: math.Inf(1)}, {RequestCount: -5}} {
		h.r.ObserveStat(key, bad) // never panics, never counts
	}
	if r := pol.Snapshot().Requests; r != 4 {
		t.Errorf("requests %d after bad stats, want 4", r)
	}
}

// The holder writes the state and windows on the PA, rate-limited; a new
// autoscaler (a restart, or a replica taking the bucket over) reads them
// back and plans the same.
func TestKeepAliveStateSurvivesRestart(t *testing.T) {
	cfg := func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveHybrid }
	h, pa := kaHarness(t, cfg)
	feedIdle(h, repeat(10*time.Minute+20*time.Second, 20)...)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	ann := patchedAnnotations(t, h)
	if ann == nil {
		t.Fatal("no annotations written")
	}
	var win struct {
		Policy string `json:"policy"`
		keepalive.Summary
	}
	if err := json.Unmarshal([]byte(ann[asconfig.KeepAliveWindowsAnnotationKey].(string)), &win); err != nil {
		t.Fatal(err)
	}
	if win.Policy != "hybrid" || win.Mode != "histogram" || win.PreWarmSeconds != 540 || win.IdleTimes != 20 {
		t.Errorf("windows annotation %+v", win)
	}
	state := ann[asconfig.KeepAliveStateAnnotationKey].(string)
	if len(state) > 400 {
		t.Errorf("state is %d bytes: %s", len(state), state)
	}

	// Rate limit: one more idle time a moment later is not written at
	// once (the windows did not move), but a minute after the last write.
	h.clock.Step(20 * time.Second)
	feedIdle(h)
	h.after = nil
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if patchedAnnotations(t, h) != nil {
		t.Error("state written again within a minute")
	}
	h.clock.Step(time.Minute)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	ann = patchedAnnotations(t, h)
	if ann == nil {
		t.Fatal("state not written after a minute")
	}

	// A new autoscaler with the PA as written.
	h2, _ := kaHarness(t, cfg, withAnn(asconfig.KeepAliveStateAnnotationKey, ann[asconfig.KeepAliveStateAnnotationKey].(string)),
		withAnn(asconfig.KeepAliveWindowsAnnotationKey, ann[asconfig.KeepAliveWindowsAnnotationKey].(string)))
	h2.clock.SetTime(h.clock.Now())
	p1, p2 := h.r.keepAlive.revs[key].pol, h2.r.keepAlive.revs[key].pol
	if p1.Windows() != p2.Windows() || !p1.IdleSince().Truncate(time.Millisecond).Equal(p2.IdleSince()) {
		t.Errorf("restored windows %+v idle since %v, want %+v %v", p2.Windows(), p2.IdleSince(), p1.Windows(), p1.IdleSince())
	}
	if err := h2.reconcile(); err != nil {
		t.Fatal(err)
	}
	if a := patchedAnnotations(t, h2); a != nil {
		t.Errorf("restored state written back unchanged: %v", a)
	}
	_ = pa

	// At zero with no metrics yet (the restarted autoscaler's decider
	// wants -1), the restored policy still pre-warms on time.
	h2.scales.replicas, h2.scales.patches = ptr32(0), nil
	h2.podInf.Core().V1().Pods().Informer().GetIndexer().Replace(nil, "")
	h2.deciders.set(key, multiscaler.Status{DesiredScale: -1})
	pa2, _ := h2.sf.Autoscaling().V1alpha1().PodAutoscalers().Lister().PodAutoscalers(key.Namespace).Get(key.Name)
	at, to := zeroAt(h2, pa2, time.Hour)
	if want := p2.IdleSince().Add(9*time.Minute - 2*time.Second).Sub(t0); at != want || to != 1 {
		t.Errorf("restarted at zero: scaled to %d at t0+%v, want 1 at t0+%v", to, at, want)
	}
}

// With the policy off, a revision at zero whose decider has no metrics yet
// is left alone, as upstream.
func TestKeepAliveOffUnknownAtZero(t *testing.T) {
	h, pa := kaHarness(t, nil)
	h.scales.replicas = ptr32(0)
	h.deciders.set(key, multiscaler.Status{DesiredScale: -1})
	if at, to := zeroAt(h, pa, time.Hour); to != -1 {
		t.Errorf("scaled to %d after %v, want no patch", to, at)
	}
}

// patchedAnnotations returns the annotations of the last PA patch, or nil.
func patchedAnnotations(t *testing.T, h *harness) map[string]any {
	t.Helper()
	var out map[string]any
	for _, a := range h.serving.Actions() {
		p, ok := a.(clientgotesting.PatchAction)
		if !ok || a.GetResource().Resource != "podautoscalers" {
			continue
		}
		var body struct {
			Metadata struct {
				Annotations map[string]any `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(p.GetPatch(), &body); err != nil {
			t.Fatal(err)
		}
		out = body.Metadata.Annotations
	}
	return out
}

// A bad annotation or key: a clear error, one log line however many
// reconciles, an event for the annotation, and the policy off where it
// applies. A bad state annotation: one line, learning afresh.
func TestKeepAliveBadValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     map[string]string
		opts    []paOpt
		wantLog string
		wantOn  bool
		wantEvt bool
	}{
		{name: "bad annotation", opts: []paOpt{withAnn(asconfig.KeepAliveAnnotationKey, "forever")},
			cfg:     map[string]string{asconfig.KeyThawKeepAlive: "learned"},
			wantLog: `autoscaling.thaw.dev/keep-alive: invalid value \"forever\": want off, learned or hybrid`, wantEvt: true},
		{name: "bad key", cfg: map[string]string{asconfig.KeyThawKeepAlive: "1"},
			wantLog: `thaw-keep-alive: invalid value \"1\": want off, learned or hybrid`},
		{name: "bad key, annotation on", cfg: map[string]string{asconfig.KeyThawKeepAlive: "1"},
			opts:    []paOpt{withAnn(asconfig.KeepAliveAnnotationKey, "learned")},
			wantLog: `thaw-keep-alive: invalid value \"1\"`, wantOn: true},
		{name: "bad time scale", opts: []paOpt{withAnn(asconfig.KeepAliveAnnotationKey, "learned"),
			withAnn(asconfig.KeepAliveTimeScaleAnnotationKey, "7")},
			wantLog: `autoscaling.thaw.dev/keep-alive-time-scale: invalid value \"7\"`, wantEvt: true},
		{name: "bad state", opts: []paOpt{withAnn(asconfig.KeepAliveAnnotationKey, "learned"),
			withAnn(asconfig.KeepAliveStateAnnotationKey, `{"v":1,"binSeconds":60,"counts":[[999,1]]}`)},
			wantLog: "state bin 999 beyond", wantOn: true},
		{name: "state not JSON", opts: []paOpt{withAnn(asconfig.KeepAliveAnnotationKey, "learned"),
			withAnn(asconfig.KeepAliveStateAnnotationKey, `{`)},
			wantLog: "keep-alive-state", wantOn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			h, pa := kaHarness(t, func(c *asconfig.Config) {
				parsed, err := asconfig.NewConfigFromMap(tc.cfg)
				if err != nil {
					t.Fatal(err)
				}
				*c = *parsed
			}, tc.opts...)
			// kaHarness synced once with the test logger; start over with
			// the observer.
			h.r.d.Logger = zap.New(core).Sugar()
			h.r.keepAlive.deleted(pa)
			h.r.keepAlive.cfgLogged.Store(nil)
			for len(h.rec.Events) > 0 {
				<-h.rec.Events
			}
			for range 5 {
				h.r.keepAlive.sync(pa)
				if err := h.reconcile(); err != nil {
					t.Fatal(err)
				}
			}
			var lines []string
			for _, e := range logs.All() {
				if e.Level >= zapcore.WarnLevel {
					lines = append(lines, e.Message+" "+contextString(e.Context))
				}
			}
			if len(lines) != 1 || !strings.Contains(lines[0], tc.wantLog) {
				t.Errorf("warnings %q, want one with %q", lines, tc.wantLog)
			}
			if _, on := h.r.keepAlive.revs[key]; on != tc.wantOn {
				t.Errorf("policy on %v, want %v", on, tc.wantOn)
			}
			evts := 0
			for len(h.rec.Events) > 0 {
				if e := <-h.rec.Events; strings.Contains(e, reasonInvalidKeepAlive) {
					evts++
				}
			}
			if (evts == 1) != tc.wantEvt || evts > 1 {
				t.Errorf("%d %s events, want one: %v", evts, reasonInvalidKeepAlive, tc.wantEvt)
			}
		})
	}
}

func contextString(fs []zapcore.Field) string {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	b, _ := json.Marshal(enc.Fields)
	return string(b)
}

// The autoscaler's annotations stay on the PA: the Metric and the SKS do not
// copy them (each state write would rewrite both).
func TestKeepAliveAnnotationsNotCopied(t *testing.T) {
	pa := newPA(withAnn(asconfig.KeepAliveAnnotationKey, "learned"), withAnn(asconfig.KeepAliveStateAnnotationKey, "{}"),
		withAnn(asconfig.KeepAliveWindowsAnnotationKey, "{}"))
	s := Resolve(asconfig.DefaultConfig(), &asconfig.DeploymentConfig{}, pa)
	for name, ann := range map[string]map[string]string{"metric": MakeMetric(pa, &s, "x").Annotations,
		"sks": MakeSKS(pa, nv1alpha1.SKSOperationModeServe, 2).Annotations} {
		_, st := ann[asconfig.KeepAliveStateAnnotationKey]
		_, win := ann[asconfig.KeepAliveWindowsAnnotationKey]
		if st || win || ann[asconfig.KeepAliveAnnotationKey] != "learned" {
			t.Errorf("%s annotations %v", name, ann)
		}
	}
}

// Over the cluster-wide write budget, the state waits a persist period, so
// thousands of revisions do not churn the queue.
func TestKeepAliveWriteBudget(t *testing.T) {
	h, _ := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveLearned })
	h.r.keepAlive.writes = flowcontrol.NewFakeNeverRateLimiter()
	feedIdle(h, time.Minute)
	h.after = nil
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if a := patchedAnnotations(t, h); a != nil {
		t.Errorf("written over the budget: %v", a)
	}
	if !slices.Contains(h.after, requeue{key, keepAlivePersistEvery}) {
		t.Errorf("requeues %v, want one after %v", h.after, keepAlivePersistEvery)
	}
}

// A replica without the bucket learns from the stats it is forwarded but
// writes nothing; when it takes the bucket over (failover), it acts on the
// windows it learned: the state it writes holds every idle time.
func TestKeepAliveLearnsWithoutTheBucket(t *testing.T) {
	h, pa := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveHybrid })
	var holds atomic.Bool
	h.r.d.Owns = func(types.NamespacedName) bool { return holds.Load() }
	feedIdleUntil(h, t0, repeat(10*time.Minute+20*time.Second, 20)...)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if n := len(h.serving.Actions()); n != 0 {
		t.Fatalf("%d writes without the bucket: %v", n, h.serving.Actions())
	}
	var patches []map[string]any
	h.serving.PrependReactor("patch", "podautoscalers", func(a clientgotesting.Action) (bool, runtime.Object, error) {
		var body struct {
			Metadata struct {
				Annotations map[string]any `json:"annotations"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(a.(clientgotesting.PatchAction).GetPatch(), &body)
		patches = append(patches, body.Metadata.Annotations)
		return false, nil, nil
	})
	holds.Store(true)
	at, to := zeroAt(h, pa, time.Hour)
	if at != 30*time.Second-time.Nanosecond || to != 0 {
		t.Fatalf("scaled to %d at idle+%v, want 0 after the grace period", to, at)
	}
	if len(patches) != 1 {
		t.Fatalf("%d state writes as the new holder, want 1", len(patches))
	}
	ann := patches[0]
	var st keepalive.State
	if err := json.Unmarshal([]byte(ann[asconfig.KeepAliveStateAnnotationKey].(string)), &st); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Counts, [][2]uint32{{10, 20}}) {
		t.Errorf("state counts %v, want the 20 idle times learned without the bucket", st.Counts)
	}
}

// A pre-warm is no wake-up: while the cluster starts as many pods as it can,
// it waits (and leaves nothing in the pacer's queue), and tries again.
func TestKeepAlivePreWarmYieldsToPacer(t *testing.T) {
	h, _ := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveHybrid })
	h.clock.SetTime(t0.Add(-24 * time.Hour))
	feedIdle(h, repeat(10*time.Minute+20*time.Second, 20)...)
	h.clock.SetTime(h.r.keepAlive.revs[key].pol.IdleSince().Add(9 * time.Minute)) // the pre-warm window starts
	h.scales.replicas = ptr32(0)
	h.podInf.Core().V1().Pods().Informer().GetIndexer().Replace(nil, "")
	h.r.pacing.p = pacer.New(pacer.Options{Initial: 1, Min: 1})
	h.r.pacing.pod(revPod(other, "other-a", corev1.PodPending, false), false)
	h.after = nil
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if len(h.scales.patches) != 0 {
		t.Errorf("patches %v while the pacer is full, want none", h.scales.patches)
	}
	if st := h.r.pacing.p.Stats(h.clock.Now()); st.Queued != 0 {
		t.Errorf("%d wake-ups queued, want the pre-warm withdrawn", st.Queued)
	}
	if !slices.Contains(h.after, requeue{key, preWarmRecheck}) {
		t.Errorf("requeues %v, want one after %v", h.after, preWarmRecheck)
	}
	h.r.pacing.pod(revPod(other, "other-a", corev1.PodRunning, true), false)
	if err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.scales.patches, []int32{1}) {
		t.Errorf("patches %v once the pacer has room, want [1]", h.scales.patches)
	}
}

// The stat path's cost per stat: every stat the autoscaler takes goes
// through ObserveStat.
func BenchmarkObserveStat(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "policy off"
		if on {
			name = "policy on"
		}
		b.Run(name, func(b *testing.B) {
			clk := clocktesting.NewFakeClock(t0)
			r := &Reconciler{d: Deps{Clock: clk}}
			r.keepAlive = &keepAlives{r: r, revs: map[types.NamespacedName]*kaRev{}}
			if on {
				pol, err := keepalive.New(PolicyConfig(asconfig.KeepAliveLearned, 90*time.Second), clk)
				if err != nil {
					b.Fatal(err)
				}
				r.keepAlive.revs[key] = &kaRev{mode: asconfig.KeepAliveLearned, pol: pol}
			}
			b.ReportAllocs()
			for b.Loop() {
				r.ObserveStat(key, traffic)
			}
		})
	}
}

// A trace replayed 12 times faster, with the time-scale annotation 12,
// gets the trace's windows on the compressed clock: pre-warm at 45 s
// instead of 9 min.
func TestKeepAliveTimeScaled(t *testing.T) {
	h, pa := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveHybrid },
		withAnn(asconfig.KeepAliveTimeScaleAnnotationKey, "12"))
	// Every 10m20s of trace time: 51.67 s here (feedIdle adds the quiet 2 s).
	feedIdleUntil(h, t0, repeat((10*time.Minute+20*time.Second)/12-keepAliveQuiet, 20)...)
	if w := h.r.keepAlive.revs[key].pol.Windows(); w.PreWarm != 45*time.Second || w.End() != 60500*time.Millisecond {
		t.Fatalf("windows %+v, want pre-warm 45 s, end 60.5 s", w)
	}
	at, to := zeroAt(h, pa, time.Hour)
	if at != 30*time.Second-time.Nanosecond || to != 0 {
		t.Fatalf("scaled to %d at idle+%v, want 0 after the grace period", to, at)
	}
	h.scales.patches = nil
	h.podInf.Core().V1().Pods().Informer().GetIndexer().Replace(nil, "")
	h.clock.Step(time.Second)
	if at, to = zeroAt(h, pa, time.Hour); at != 43*time.Second || to != 1 {
		t.Errorf("pre-warm: scaled to %d at idle+%v, want 1 at +43s", to, at)
	}
}

// A pre-warmed pod that turns inactive before the window opens (a stable
// window shorter than a pod start) is kept, not dropped and started again,
// even where upstream's grace period is over at once (the activator in the
// path all along).
func TestKeepAliveKeepsPreWarmedPodBeforeWindow(t *testing.T) {
	h, pa := kaHarness(t, func(c *asconfig.Config) { c.KeepAlive = asconfig.KeepAliveHybrid })
	h.r.keepAlive.lead = func() time.Duration { return 10 * time.Second }
	if err := h.nf.Networking().V1alpha1().ServerlessServices().Informer().GetIndexer().Update(
		makeSKS(pa, nv1alpha1.SKSOperationModeProxy, 2, time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The window opens 6 s after t0 (9 min after idle) and ends at
	// t0+3m12s (12m06s after idle).
	feedIdleUntil(h, t0.Add(-9*time.Minute+6*time.Second), repeat(10*time.Minute+20*time.Second, 20)...)
	h.clock.SetTime(t0)
	at, to := zeroAt(h, pa, time.Hour)
	if want := 3*time.Minute + 12*time.Second; at != want || to != 0 {
		t.Errorf("scaled to %d at t0+%v, want 0 at the window's end, t0+%v", to, at, want)
	}
}
