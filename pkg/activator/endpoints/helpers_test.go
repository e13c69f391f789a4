package endpoints

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

var testRev = types.NamespacedName{Namespace: "ns", Name: "rev"}

// fakeRevs is a RevisionSource backed by a map.
type fakeRevs struct {
	mu       sync.Mutex
	infos    map[types.NamespacedName]*revisions.Info
	onUpsert []func(*revisions.Info)
	onDelete []func(types.NamespacedName)
}

func newFakeRevs(infos ...*revisions.Info) *fakeRevs {
	f := &fakeRevs{infos: map[types.NamespacedName]*revisions.Info{}}
	for _, i := range infos {
		f.infos[i.ID] = i
	}
	return f
}

func (f *fakeRevs) Get(ns, name string) (*revisions.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i, ok := f.infos[types.NamespacedName{Namespace: ns, Name: name}]; ok {
		return i, nil
	}
	return nil, fmt.Errorf("%w: %s/%s", revisions.ErrNotFound, ns, name)
}
func (f *fakeRevs) OnUpsert(fn func(*revisions.Info))      { f.onUpsert = append(f.onUpsert, fn) }
func (f *fakeRevs) OnDelete(fn func(types.NamespacedName)) { f.onDelete = append(f.onDelete, fn) }
func (f *fakeRevs) upsert(i *revisions.Info) {
	f.mu.Lock()
	f.infos[i.ID] = i
	f.mu.Unlock()
	for _, fn := range f.onUpsert {
		fn(i)
	}
}
func (f *fakeRevs) delete(id types.NamespacedName) {
	f.mu.Lock()
	delete(f.infos, id)
	f.mu.Unlock()
	for _, fn := range f.onDelete {
		fn(id)
	}
}

func revInfo(mut ...func(*revisions.Info)) *revisions.Info {
	i := &revisions.Info{ID: testRev, ContainerConcurrency: 1, ProbeOptimisation: true}
	for _, m := range mut {
		m(i)
	}
	return i
}

// fakeSink records every update.
type fakeSink struct {
	mu         sync.Mutex
	backends   map[types.NamespacedName][]throttler.Backends
	activators map[types.NamespacedName][][]string
	changed    chan struct{}
}

func newFakeSink() *fakeSink {
	return &fakeSink{backends: map[types.NamespacedName][]throttler.Backends{},
		activators: map[types.NamespacedName][][]string{}, changed: make(chan struct{}, 1)}
}

func (s *fakeSink) UpdateBackends(rev types.NamespacedName, b throttler.Backends) {
	s.mu.Lock()
	s.backends[rev] = append(s.backends[rev], b)
	s.mu.Unlock()
	s.poke()
}

func (s *fakeSink) UpdateActivators(rev types.NamespacedName, ips []string) {
	s.mu.Lock()
	s.activators[rev] = append(s.activators[rev], ips)
	s.mu.Unlock()
	s.poke()
}

func (s *fakeSink) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *fakeSink) last(rev types.NamespacedName) (throttler.Backends, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.backends[rev]
	if len(h) == 0 {
		return throttler.Backends{}, 0
	}
	return h[len(h)-1], len(h)
}

func (s *fakeSink) history(rev types.NamespacedName) []throttler.Backends {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.backends[rev])
}

// waitBackends waits until the latest update for rev satisfies ok.
func (s *fakeSink) waitBackends(t *testing.T, rev types.NamespacedName, what string, ok func(throttler.Backends) bool) throttler.Backends {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if b, n := s.last(rev); n > 0 && ok(b) {
			return b
		}
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for backends %s; history %+v", what, s.history(rev))
		}
	}
}

func hasDests(want ...string) func(throttler.Backends) bool {
	slices.Sort(want)
	return func(b throttler.Backends) bool { return b.ClusterIPDest == "" && slices.Equal(b.Dests, want) }
}

// pod is a loopback HTTP server acting as a queue-proxy.
type pod struct {
	srv    *httptest.Server
	probes atomic.Int64
	// mode: "pass", "503", "500", "body", "hang" (until the request ends).
	mode atomic.Value
}

func newPod(t *testing.T, mode string) *pod {
	p := &pod{}
	p.mode.Store(mode)
	quit := make(chan struct{})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("K-Network-Probe") != "queue" || r.Header.Get("User-Agent") != "Knative-Activator-Probe" || r.URL.Path != "/healthz" {
			http.Error(w, "not a queue probe", http.StatusBadRequest)
			return
		}
		p.probes.Add(1)
		switch p.mode.Load().(string) {
		case "pass":
			fmt.Fprint(w, "queue")
		case "503":
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		case "500":
			http.Error(w, "broken", http.StatusInternalServerError)
		case "body":
			fmt.Fprint(w, "queue-proxy")
		case "hang":
			select {
			case <-r.Context().Done():
			case <-quit:
			}
		}
	}))
	// Close waits for handlers, so hanging ones must end first.
	t.Cleanup(func() { close(quit); p.srv.Close() })
	return p
}

func (p *pod) dest() string    { return p.srv.Listener.Addr().String() }
func (p *pod) set(mode string) { p.mode.Store(mode) }

// epAddr is one address of an Endpoints object; each gets its own subset, since loopback pods differ
// by port.
type epAddr struct {
	dest  string
	ready bool
}

func privateEndpoints(rev types.NamespacedName, portName string, addrs ...epAddr) *corev1.Endpoints {
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{
		Namespace: rev.Namespace, Name: rev.Name + "-private",
		Labels: map[string]string{ServiceTypeLabel: "Private", RevisionUIDLabel: "uid", RevisionLabel: rev.Name},
	}}
	for _, a := range addrs {
		host, portStr, _ := net.SplitHostPort(a.dest)
		port, _ := strconv.Atoi(portStr)
		ss := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: portName, Port: int32(port)}}}
		if a.ready {
			ss.Addresses = []corev1.EndpointAddress{{IP: host}}
		} else {
			ss.NotReadyAddresses = []corev1.EndpointAddress{{IP: host}}
		}
		ep.Subsets = append(ep.Subsets, ss)
	}
	return ep
}

type env struct {
	t     *testing.T
	ctx   context.Context
	kube  *fake.Clientset
	revs  *fakeRevs
	sink  *fakeSink
	clock *clocktesting.FakeClock
	m     *Manager
}

// newEnv runs a Manager on a fake clientset. opts.Clock, when nil, is a fake clock.
func newEnv(t *testing.T, opts Options, infos ...*revisions.Info) *env {
	t.Helper()
	e := &env{t: t, kube: fake.NewClientset(), revs: newFakeRevs(infos...), sink: newFakeSink()}
	if opts.Clock == nil {
		e.clock = clocktesting.NewFakeClock(time.Now())
		opts.Clock = e.clock
	}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t).Sugar()
	}
	e.m = NewManager(e.kube, e.revs, e.sink, opts)
	ctx, cancel := context.WithCancel(context.Background())
	e.ctx = ctx
	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Manager.Run did not return after cancel")
		}
	})
	if !e.m.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}
	return e
}

func (e *env) apply(ep *corev1.Endpoints) {
	e.t.Helper()
	_, err := e.kube.CoreV1().Endpoints(ep.Namespace).Update(e.ctx, ep, metav1.UpdateOptions{})
	if err != nil {
		_, err = e.kube.CoreV1().Endpoints(ep.Namespace).Create(e.ctx, ep, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deleteEndpoints(ns, name string) {
	e.t.Helper()
	if err := e.kube.CoreV1().Endpoints(ns).Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// step advances the fake clock once a ticker or timer waits on it.
func (e *env) step(d time.Duration) {
	e.t.Helper()
	testutil.StepWhenWaiting(e.t, e.clock, d)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}

func splitHostPort(dest string) (string, int32) {
	host, portStr, _ := net.SplitHostPort(dest)
	port, _ := strconv.Atoi(portStr)
	return host, int32(port)
}

// stepUntil ticks the fake clock until the latest update for testRev satisfies ok. Several ticks may be
// needed: a tick that lands while a probe is still in flight starts nothing.
func (e *env) stepUntil(d time.Duration, what string, ok func(throttler.Backends) bool) {
	e.t.Helper()
	for range 50 {
		if b, n := e.sink.last(testRev); n > 0 && ok(b) {
			return
		}
		e.step(d)
		select {
		case <-e.sink.changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
	e.t.Fatalf("backends never became %s; history %+v", what, e.sink.history(testRev))
}

// The throttler is the sink in the activator.
var _ BackendSink = (*throttler.Throttler)(nil)
