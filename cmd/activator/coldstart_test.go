package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/pkg/autoscaler/statserver"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/observability"
	"github.com/thaw-dev/thaw/pkg/wire"
)

func TestPodReadyTap(t *testing.T) {
	rev := types.NamespacedName{Namespace: "ns", Name: "rev"}
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	thr := throttler.New("10.0.0.9", throttler.Options{}, clk, zaptest.NewLogger(t).Sugar())
	thr.UpsertRevision(rev, throttler.RevisionConfig{ContainerConcurrency: 1})
	tr := coldstart.NewTracker(coldstart.TrackerOptions{Routable: thr.Routable, Clock: clk})
	tap := podReadyTap{thr, tr, clk}

	req := tr.Arrive(context.Background(), rev)
	if req == nil {
		t.Fatal("revision without pods is warm")
	}
	clk.Step(time.Second)
	tap.UpdateBackends(rev, throttler.Backends{}) // nothing ready yet
	clk.Step(time.Second)
	ready := clk.Now()
	tap.UpdateBackends(rev, throttler.Backends{Dests: []string{"10.1.0.1:8012"}})
	clk.Step(time.Second)
	tap.UpdateBackends(rev, throttler.Backends{Dests: []string{"10.1.0.1:8012", "10.1.0.2:8012"}}) // not the first
	if !thr.Routable(rev) {
		t.Fatal("the tap did not hand the pod to the throttler")
	}
	if tl := req.FirstByte("10.1.0.1:8012"); !tl.PodReady.Equal(ready) {
		t.Fatalf("PodReady = %v, want %v", tl.PodReady, ready)
	}
	if tr.Arrive(context.Background(), rev) != nil {
		t.Fatal("request after the pod is ready is cold")
	}
}

// TestColdStartWiring runs the real main wiring on loopback: a request for a
// revision whose pod is not ready yet waits; the poke reaches a real stat
// server; the pod shows up in the private Endpoints and passes its probe;
// the response carries the whole timeline and the histogram has it.
func TestColdStartWiring(t *testing.T) {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("K-Network-Probe") == "queue" {
			io.WriteString(w, "queue")
			return
		}
		if r.Header.Get(coldstart.RequestHeader) != "" {
			w.WriteHeader(http.StatusBadRequest) // the opt-in must not reach the pod
			return
		}
		io.WriteString(w, "hello")
	}))
	defer pod.Close()
	podHost, podPortStr, _ := net.SplitHostPort(strings.TrimPrefix(pod.URL, "http://"))
	podPort, _ := strconv.Atoi(podPortStr)

	statLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stats := make(chan wire.StatMessage, 100)
	ss := statserver.New(statLis.Addr().String(), stats, statserver.Options{}, clock.RealClock{}, zap.NewNop().Sugar())
	go ss.Serve(statLis)
	defer ss.Shutdown(context.Background())

	rev := &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rev", UID: "uid-1"}}
	serving := servingfake.NewSimpleClientset(rev)
	private := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rev-private", Labels: map[string]string{
		endpoints.ServiceTypeLabel: "Private", endpoints.RevisionLabel: "rev", endpoints.RevisionUIDLabel: "uid-1"}}}
	kube := kubefake.NewSimpleClientset(private.DeepCopy())

	e, err := loadEnv(func(k string) string {
		return map[string]string{"POD_NAME": "activator-0", "POD_IP": "10.0.0.9", "DRAIN_TIMEOUT": "0s"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	e.ClusterDomain = "cluster.local"
	e.http1Addr, e.h2cAddr, e.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	e.ProfilingPort = 0
	e.autoscalerURL = "ws://" + statLis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runActivator(ctx, e, observability.Defaults(), kube, serving, endpoints.MeshDisabled, false,
			zaptest.NewLogger(t).Sugar(), zap.NewAtomicLevel())
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runActivator: %v", err)
		}
	}()
	base := "http://" + e.http1Addr
	waitFor(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
		req.Header.Set("User-Agent", "kube-probe/1.36")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	type answer struct {
		resp *http.Response
		err  error
	}
	answers := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
		req.Host = "rev.ns.svc.cluster.local"
		req.Header.Set(coldstart.RequestHeader, "1")
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		answers <- answer{resp, err}
	}()
	select {
	case m := <-stats:
		if m.Key.Name != "rev" || m.Stat.AverageConcurrentRequests != 1 {
			t.Fatalf("first stat %+v, want the poke", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no poke reached the stat server")
	}
	// The pod comes up.
	private.Subsets = []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: podHost}},
		Ports: []corev1.EndpointPort{{Name: "http", Port: int32(podPort)}}}}
	if _, err := kube.CoreV1().Endpoints("ns").Update(context.Background(), private, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := <-answers
	if a.err != nil {
		t.Fatal(a.err)
	}
	b, _ := io.ReadAll(a.resp.Body)
	a.resp.Body.Close()
	if a.resp.StatusCode != 200 || string(b) != "hello" {
		t.Fatalf("got %d %q", a.resp.StatusCode, b)
	}
	v := a.resp.Header.Get(coldstart.ResponseHeader)
	tl, warm, err := coldstart.ParseHeader(v)
	if err != nil || warm || tl.Pod != net.JoinHostPort(podHost, podPortStr) {
		t.Fatalf("%s: %q (%v)", coldstart.ResponseHeader, v, err)
	}
	// Every phase known and in order.
	if tl.PokeSent.Before(tl.Arrival) || tl.PodReady.Before(tl.PokeSent) || tl.FirstByte.Before(tl.PodReady) || tl.PokeSent.IsZero() || tl.PodReady.IsZero() {
		t.Fatalf("timeline out of order or incomplete: %s", v)
	}
	t.Logf("%s: %s (poke %v, pod ready %v, first byte %v)", coldstart.ResponseHeader, v,
		tl.PokeSent.Sub(tl.Arrival), tl.PodReady.Sub(tl.PokeSent), tl.FirstByte.Sub(tl.PodReady))

	var mb []byte
	waitFor(t, func() bool { // the metrics server starts beside the data servers
		resp, err := http.Get("http://" + e.MetricsAddr + "/metrics")
		if err != nil {
			return false
		}
		mb, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return true
	})
	for _, phase := range []string{"poke", "pod_ready", "first_byte", "total"} {
		if want := `thaw_activator_coldstart_phase_seconds_count{phase="` + phase + `"} 1`; !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
