package endpoints

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/test/podharness"
)

func TestProbe(t *testing.T) {
	tests := []struct {
		mode string
		want probeOutcome
	}{
		{"pass", probePassed},
		{"503", probeMeshLike},
		{"500", probeNotMesh},
		{"body", probeNotMesh},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			p := newPod(t, tc.mode)
			got, err := probe(context.Background(), http.DefaultTransport, p.dest(), "")
			if got != tc.want || (err == nil) != (tc.want == probePassed) {
				t.Errorf("probe = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		p := newPod(t, "pass")
		dest := p.dest()
		p.srv.Close()
		if got, err := probe(context.Background(), http.DefaultTransport, dest, ""); got != probeFailed || err == nil {
			t.Errorf("probe of closed port = %v, %v; want failure", got, err)
		}
	})
}

func TestParseMeshMode(t *testing.T) {
	for in, want := range map[string]MeshMode{"": MeshAuto, "auto": MeshAuto, "Enabled": MeshEnabled, " disabled ": MeshDisabled} {
		if got, err := ParseMeshMode(in); err != nil || got != want {
			t.Errorf("ParseMeshMode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseMeshMode("sometimes"); err == nil {
		t.Error("ParseMeshMode(sometimes) succeeded")
	}
}

func TestProbeSettingsFromEnv(t *testing.T) {
	tests := []struct {
		env           map[string]string
		timeout, freq time.Duration
		wantErr       bool
	}{
		{env: nil, timeout: 300 * time.Millisecond, freq: 200 * time.Millisecond},
		{env: map[string]string{"PROBE_TIMEOUT": "1s", "PROBE_FREQUENCY": "50ms"}, timeout: time.Second, freq: 50 * time.Millisecond},
		{env: map[string]string{"PROBE_TIMEOUT": "soon"}, wantErr: true},
		{env: map[string]string{"PROBE_FREQUENCY": "-1s"}, wantErr: true},
	}
	for _, tc := range tests {
		to, fr, err := ProbeSettingsFromEnv(func(k string) string { return tc.env[k] })
		if (err != nil) != tc.wantErr || (!tc.wantErr && (to != tc.timeout || fr != tc.freq)) {
			t.Errorf("ProbeSettingsFromEnv(%v) = %v, %v, %v", tc.env, to, fr, err)
		}
	}
}

func TestEndpointsToDests(t *testing.T) {
	ep := &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{
		Addresses:         []corev1.EndpointAddress{{IP: "10.0.0.1"}, {IP: "10.0.0.2"}},
		NotReadyAddresses: []corev1.EndpointAddress{{IP: "10.0.0.3"}},
		Ports:             []corev1.EndpointPort{{Name: "http", Port: 8012}, {Name: "http2", Port: 8013}},
	}, {
		Addresses: []corev1.EndpointAddress{{IP: "10.0.0.9"}},
		Ports:     []corev1.EndpointPort{{Name: "metrics", Port: 9090}},
	}}}
	d := endpointsToDests(ep, "http")
	if got := sorted(d.ready); strings.Join(got, ",") != "10.0.0.1:8012,10.0.0.2:8012" {
		t.Errorf("ready = %v", got)
	}
	if got := sorted(d.notReady); strings.Join(got, ",") != "10.0.0.3:8012" {
		t.Errorf("notReady = %v", got)
	}
	if got := sorted(endpointsToDests(ep, "http2").ready); strings.Join(got, ",") != "10.0.0.1:8013,10.0.0.2:8013" {
		t.Errorf("h2c ready = %v", got)
	}
}

func TestFirstHealthyPodRoutedAtOnce(t *testing.T) {
	e := newEnv(t, Options{}, revInfo())
	fast, slow := newPod(t, "pass"), newPod(t, "hang")
	e.apply(privateEndpoints(testRev, "http", epAddr{fast.dest(), false}, epAddr{slow.dest(), false}))
	// The fake clock never moves, so the slow probe is still in flight: the fast pod must not wait for it.
	e.sink.waitBackends(t, testRev, "fast pod", hasDests(fast.dest()))
	eventually(t, "slow pod probe in flight", func() bool { return slow.probes.Load() == 1 })
}

func TestUnhealthyPodReprobedOnTick(t *testing.T) {
	e := newEnv(t, Options{ProbeFrequency: 200 * time.Millisecond}, revInfo())
	p := newPod(t, "503")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
	eventually(t, "first probe", func() bool { return p.probes.Load() == 1 })
	p.set("pass")
	if b, _ := e.sink.last(testRev); len(b.Dests) != 0 {
		t.Fatalf("routed to a pod that failed its probe: %+v", b)
	}
	e.stepUntil(200*time.Millisecond, "pod after re-probe", hasDests(p.dest()))
}

func TestReadyToNotReadyIsReprobed(t *testing.T) {
	e := newEnv(t, Options{}, revInfo())
	a, b := newPod(t, "pass"), newPod(t, "pass")
	e.apply(privateEndpoints(testRev, "http", epAddr{a.dest(), true}, epAddr{b.dest(), true}))
	e.sink.waitBackends(t, testRev, "both pods", hasDests(a.dest(), b.dest()))
	a.set("503") // draining
	e.apply(privateEndpoints(testRev, "http", epAddr{a.dest(), false}, epAddr{b.dest(), true}))
	// a leaves the routing set at once and is probed again (and fails).
	e.sink.waitBackends(t, testRev, "only b", hasDests(b.dest()))
	eventually(t, "a re-probed", func() bool { return a.probes.Load() == 2 })
	// A pod leaving the Endpoints is dropped without a probe.
	e.apply(privateEndpoints(testRev, "http", epAddr{a.dest(), false}))
	e.sink.waitBackends(t, testRev, "nothing", hasDests())
}

func TestProbeOptimisationDisabled(t *testing.T) {
	e := newEnv(t, Options{}, revInfo(func(i *revisions.Info) { i.ProbeOptimisation = false }))
	p := newPod(t, "pass")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
	eventually(t, "probe", func() bool { return p.probes.Load() == 1 })
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false})) // a no-op event to flush the loop
	if b, _ := e.sink.last(testRev); len(b.Dests) != 0 {
		t.Fatalf("routed to a not-ready pod with probe optimisation off: %+v", b)
	}
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), true}))
	e.sink.waitBackends(t, testRev, "ready pod", hasDests(p.dest()))
}

func TestH2CRevisionUsesHTTP2Port(t *testing.T) {
	e := newEnv(t, Options{}, revInfo(func(i *revisions.Info) { i.H2C = true }))
	h1, h2 := newPod(t, "pass"), newPod(t, "pass")
	ep := privateEndpoints(testRev, "http2", epAddr{h2.dest(), true})
	ep.Subsets = append(ep.Subsets, privateEndpoints(testRev, "http", epAddr{h1.dest(), true}).Subsets...)
	e.apply(ep)
	e.sink.waitBackends(t, testRev, "http2 port only", hasDests(h2.dest()))
	if h1.probes.Load() != 0 {
		t.Error("probed the http port of an h2c revision")
	}
}

func TestDeletion(t *testing.T) {
	tests := []struct {
		name   string
		delete func(e *env)
	}{
		{"endpoints deleted", func(e *env) { e.deleteEndpoints("ns", "rev-private") }},
		{"revision deleted", func(e *env) { e.revs.delete(testRev) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{}, revInfo())
			p := newPod(t, "pass")
			e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), true}))
			e.sink.waitBackends(t, testRev, "pod", hasDests(p.dest()))
			tc.delete(e)
			e.sink.waitBackends(t, testRev, "empty after delete", hasDests())
			eventually(t, "watcher gone", func() bool {
				e.m.mu.Lock()
				defer e.m.mu.Unlock()
				return len(e.m.watchers) == 0
			})
		})
	}
}

func TestEndpointsBeforeRevision(t *testing.T) {
	e := newEnv(t, Options{})
	p := newPod(t, "pass")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), true}))
	eventually(t, "endpoints parked", func() bool {
		e.m.mu.Lock()
		defer e.m.mu.Unlock()
		return e.m.waiting[testRev] != nil
	})
	e.revs.upsert(revInfo())
	e.sink.waitBackends(t, testRev, "pod once the revision is known", hasDests(p.dest()))
}

func TestRevisionRecreatedWithLingeringEndpoints(t *testing.T) {
	e := newEnv(t, Options{}, revInfo())
	p := newPod(t, "pass")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), true}))
	e.sink.waitBackends(t, testRev, "pod", hasDests(p.dest()))
	e.revs.delete(testRev)
	e.sink.waitBackends(t, testRev, "empty after delete", hasDests())
	// The Endpoints never changed, so only the revision event can bring the watcher back.
	e.revs.upsert(revInfo())
	e.sink.waitBackends(t, testRev, "pod again", hasDests(p.dest()))
}

func TestRecreatedEndpointsKeepOrder(t *testing.T) {
	e := newEnv(t, Options{}, revInfo())
	p := newPod(t, "pass")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), true}))
	e.sink.waitBackends(t, testRev, "pod", hasDests(p.dest()))
	e.deleteEndpoints("ns", "rev-private")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), true}))
	e.sink.waitBackends(t, testRev, "pod again", hasDests(p.dest()))
	h := e.sink.history(testRev)
	if len(h) != 3 || len(h[0].Dests) != 1 || len(h[1].Dests) != 0 {
		t.Errorf("history = %+v, want [pod] [] [pod]", h)
	}
}

func TestMeshDisabledTrustsReady(t *testing.T) {
	e := newEnv(t, Options{MeshMode: MeshDisabled}, revInfo())
	trusted, starting := newPod(t, "503"), newPod(t, "503")
	e.apply(privateEndpoints(testRev, "http", epAddr{trusted.dest(), true}, epAddr{starting.dest(), false}))
	e.sink.waitBackends(t, testRev, "k8s-ready pod", hasDests(trusted.dest()))
	eventually(t, "not-ready pod probed", func() bool { return starting.probes.Load() == 1 })
	if trusted.probes.Load() != 0 {
		t.Error("probed a ready pod in mesh-compatibility-mode disabled")
	}
	starting.set("pass")
	e.stepUntil(DefaultProbeFrequency, "both", hasDests(trusted.dest(), starting.dest()))
}

func privateService(rev types.NamespacedName, dest string) *corev1.Service {
	host, port := splitHostPort(dest)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: rev.Namespace, Name: rev.Name + "-private",
			Labels: map[string]string{ServiceTypeLabel: "Private"}},
		Spec: corev1.ServiceSpec{ClusterIP: host, Ports: []corev1.ServicePort{{Name: "http", Port: port}}},
	}
}

func TestMeshModes(t *testing.T) {
	tests := []struct {
		name        string
		mode        MeshMode
		podMode     string
		wantCluster bool
		wantPodDest bool
	}{
		{name: "enabled routes via ClusterIP without probing pods", mode: MeshEnabled, podMode: "pass", wantCluster: true},
		{name: "auto falls back on 503", mode: MeshAuto, podMode: "503", wantCluster: true},
		{name: "auto stays on pods when one answers", mode: MeshAuto, podMode: "pass", wantPodDest: true},
		{name: "auto does not fall back on 500", mode: MeshAuto, podMode: "500"},
		{name: "disabled never falls back", mode: MeshDisabled, podMode: "503"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The probe timeout runs on the fake clock, which the second-round loop
			// below steps while a real probe may still be in flight: keep it out of
			// reach so a slow loopback answer is never mistaken for "no answer".
			e := newEnv(t, Options{MeshMode: tc.mode, ProbeTimeout: time.Hour}, revInfo())
			p, svc := newPod(t, tc.podMode), newPod(t, "pass")
			if _, err := e.kube.CoreV1().Services("ns").Create(e.ctx, privateService(testRev, svc.dest()), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if e.m.svcInf != nil {
				eventually(t, "service cached", func() bool { _, err := e.m.clusterIPDest(testRev, "http"); return err == nil })
			}
			e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
			switch {
			case tc.wantCluster:
				e.sink.waitBackends(t, testRev, "cluster IP", func(b throttler.Backends) bool { return b.ClusterIPDest == svc.dest() })
				if tc.mode == MeshEnabled && p.probes.Load() != 0 {
					t.Error("probed a pod in mode enabled")
				}
			case tc.wantPodDest:
				e.sink.waitBackends(t, testRev, "pod", hasDests(p.dest()))
			default:
				eventually(t, "pod probed", func() bool { return p.probes.Load() >= 1 })
				// A second round (ticks landing while a probe is in flight start nothing): still no fallback.
				eventually(t, "pod probed again", func() bool {
					e.clock.Step(DefaultProbeFrequency)
					return p.probes.Load() >= 2
				})
				e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false})) // flush the loop
				if svc.probes.Load() != 0 {
					t.Errorf("probed the ClusterIP %d times", svc.probes.Load())
				}
				if b, _ := e.sink.last(testRev); b.ClusterIPDest != "" || len(b.Dests) != 0 {
					t.Errorf("backends = %+v, want none", b)
				}
			}
		})
	}
}

func TestAutoFallbackOncePerRound(t *testing.T) {
	// One tick per clock step: the fast cold period would let a step fire a round while the
	// previous one's probes are still in flight.
	e := newEnv(t, Options{MeshMode: MeshAuto, ColdProbeFrequency: DefaultProbeFrequency}, revInfo())
	p, svc := newPod(t, "503"), newPod(t, "503")
	if _, err := e.kube.CoreV1().Services("ns").Create(e.ctx, privateService(testRev, svc.dest()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "service cached", func() bool { _, err := e.m.clusterIPDest(testRev, "http"); return err == nil })
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
	eventually(t, "three pod probe rounds", func() bool {
		e.clock.Step(DefaultProbeFrequency)
		return p.probes.Load() >= 3
	})
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false})) // flush the loop
	if got, max := svc.probes.Load(), p.probes.Load(); got < 1 || got > max {
		t.Errorf("ClusterIP probed %d times over %d pod probe rounds; want 1..%d", got, max, max)
	}
}

func TestProbeTimeoutBacksOff(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv(t, Options{ProbeTimeout: 300 * time.Millisecond, ProbeFrequency: 200 * time.Millisecond,
		Logger: zap.New(core).Sugar()}, revInfo())
	p := newPod(t, "hang")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
	eventually(t, "first probe", func() bool { return p.probes.Load() == 1 })
	p.set("pass")
	e.clock.Step(300 * time.Millisecond) // the probe times out (the ticker fires too, while it is in flight)
	msg := "Probe of " + p.dest() + " timed out; probe timeout raised to 600ms"
	eventually(t, "timeout raised", func() bool { return logs.FilterMessage(msg).Len() == 1 })
	e.stepUntil(200*time.Millisecond, "pod after a timed-out probe", hasDests(p.dest()))

	// Scale to zero and back: the learned timeout is kept, so a slow first probe is not cut at 300ms.
	e.apply(privateEndpoints(testRev, "http"))
	e.sink.waitBackends(t, testRev, "scaled to zero", hasDests())
	p.set("hang")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
	eventually(t, "probe after scale from zero", func() bool { return p.probes.Load() == 3 })
	e.clock.Step(300 * time.Millisecond)
	p.set("pass")
	e.clock.Step(300 * time.Millisecond) // 600ms: now it times out, and the timeout doubles again
	eventually(t, "timeout raised again", func() bool {
		return logs.FilterMessage("Probe of "+p.dest()+" timed out; probe timeout raised to 1.2s").Len() == 1
	})
}

// TestSlowNetwork is knative/serving#14202: a probe costs two round trips (connect, then request), so
// with 150ms of added RTT it needs about 300ms, the default timeout. Thaw backs the timeout off and routes;
// with a fixed timeout (upstream) a slightly slower link never gets the pod routed.
func TestSlowNetwork(t *testing.T) {
	tests := []struct {
		name       string
		oneWay     time.Duration
		maxTimeout time.Duration
		wantRouted bool
	}{
		{name: "150ms RTT adaptive timeout routes", oneWay: 75 * time.Millisecond, maxTimeout: DefaultMaxProbeTimeout, wantRouted: true},
		{name: "300ms RTT adaptive timeout routes", oneWay: 150 * time.Millisecond, maxTimeout: DefaultMaxProbeTimeout, wantRouted: true},
		{name: "200ms RTT fixed 300ms timeout never routes", oneWay: 100 * time.Millisecond, maxTimeout: DefaultProbeTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{Clock: clock.RealClock{}, MaxProbeTimeout: tc.maxTimeout,
				Transport: &http.Transport{DisableKeepAlives: true}}, revInfo())
			p := newPod(t, "pass")
			slow := podharness.NewDelayProxy(t, "127.0.0.1:0", p.dest(), tc.oneWay)
			start := time.Now()
			e.apply(privateEndpoints(testRev, "http", epAddr{slow.Addr(), false}))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			for {
				if b, _ := e.sink.last(testRev); len(b.Dests) == 1 {
					if !tc.wantRouted {
						t.Fatalf("routed despite a fixed timeout below the RTT")
					}
					t.Logf("routed after %v through %v RTT", time.Since(start).Round(time.Millisecond), 2*tc.oneWay)
					return
				}
				select {
				case <-e.sink.changed:
				case <-ctx.Done():
					if tc.wantRouted {
						t.Fatalf("not routed within 3s; %d probes reached the pod", p.probes.Load())
					}
					if p.probes.Load() == 0 {
						t.Fatal("no probe reached the pod: the test proves nothing")
					}
					return
				}
			}
		})
	}
}

func TestPublicEndpoints(t *testing.T) {
	e := newEnv(t, Options{}, revInfo())
	pub := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rev",
			Labels: map[string]string{ServiceTypeLabel: "Public", RevisionLabel: "rev"}},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.3"}, {IP: "10.0.0.1"}},
			Ports:     []corev1.EndpointPort{{Name: "http", Port: 8012}, {Name: "http2", Port: 8013}},
		}},
	}
	e.apply(pub)
	waitActivators := func(want string) {
		t.Helper()
		eventually(t, "activators "+want, func() bool {
			e.sink.mu.Lock()
			defer e.sink.mu.Unlock()
			h := e.sink.activators[testRev]
			return len(h) > 0 && strings.Join(h[len(h)-1], ",") == want
		})
	}
	waitActivators("10.0.0.1,10.0.0.3")
	pub.Subsets[0].Addresses = append(pub.Subsets[0].Addresses, corev1.EndpointAddress{IP: "10.0.0.2"})
	e.apply(pub)
	waitActivators("10.0.0.1,10.0.0.2,10.0.0.3")
	e.deleteEndpoints("ns", "rev")
	waitActivators("")
	// A public service without the revision label is not ours.
	other := pub.DeepCopy()
	other.Name, other.Labels = "other", map[string]string{ServiceTypeLabel: "Public"}
	e.apply(other)
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	if len(e.sink.activators) != 1 {
		t.Errorf("activator updates for %d revisions, want 1", len(e.sink.activators))
	}
}

func TestRunStopsWatchers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	m := NewManager(newEnv(t, Options{}).kube, newFakeRevs(revInfo()), newFakeSink(), Options{})
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	if !m.WaitForSync(ctx) {
		t.Fatal("no sync")
	}
	p := newPod(t, "hang") // a probe in flight must not keep Run from returning
	m.privateUpdated(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
	eventually(t, "probe in flight", func() bool { return p.probes.Load() == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal(ctx.Err())
	}
}

// TestColdRevisionReprobedFast: while a revision has no healthy pod, a failing new pod is probed
// again after ColdProbeFrequency, not after ProbeFrequency.
func TestColdRevisionReprobedFast(t *testing.T) {
	e := newEnv(t, Options{ProbeFrequency: 200 * time.Millisecond, ColdProbeFrequency: 25 * time.Millisecond}, revInfo())
	start := e.clock.Now()
	p := newPod(t, "503")
	e.apply(privateEndpoints(testRev, "http", epAddr{p.dest(), false}))
	eventually(t, "first probe", func() bool { return p.probes.Load() == 1 })
	p.set("pass")
	e.stepUntil(25*time.Millisecond, "pod after a cold re-probe", hasDests(p.dest()))
	if e.clock.Since(start) >= 200*time.Millisecond {
		t.Fatalf("routed after %v of fake time, want less than ProbeFrequency", e.clock.Since(start))
	}
}

// TestProbePeriod: the cold period holds while no pod passed, within the window from the first
// cold tick; a healthy pod, or a ClusterIP in use, brings ProbeFrequency back and resets the window.
func TestProbePeriod(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	opts := Options{ProbeFrequency: 200 * time.Millisecond, ColdProbeFrequency: 25 * time.Millisecond,
		ColdProbeWindow: time.Second, Clock: clk}.withDefaults()
	w := &watcher{opts: &opts, passed: sets.New[string]()}
	steps := []struct {
		advance time.Duration
		passed  bool
		want    time.Duration
	}{
		{0, false, 25 * time.Millisecond},
		{900 * time.Millisecond, false, 25 * time.Millisecond},
		{100 * time.Millisecond, false, 200 * time.Millisecond}, // window over
		{0, true, 200 * time.Millisecond},                       // healthy: resets
		{0, false, 25 * time.Millisecond},                       // cold again: new window
		{999 * time.Millisecond, false, 25 * time.Millisecond},
	}
	for i, s := range steps {
		clk.Step(s.advance)
		w.passed.Clear()
		if s.passed {
			w.passed.Insert("10.0.0.1:8012")
		}
		if got := w.probePeriod(); got != s.want {
			t.Errorf("step %d: period = %v, want %v", i, got, s.want)
		}
	}
	off := Options{ProbeFrequency: 200 * time.Millisecond, ColdProbeFrequency: time.Second, Clock: clk}.withDefaults()
	w = &watcher{opts: &off, passed: sets.New[string]()}
	if got := w.probePeriod(); got != 200*time.Millisecond {
		t.Errorf("cold period above ProbeFrequency: got %v, want ProbeFrequency", got)
	}
}
