package main

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/autoscaler/statserver"
	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/observability"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// freeAddr returns a loopback address nothing listens on, for a server the test starts later. The
// port comes from below the kernel's ephemeral range (32768 and up): a port the kernel handed out
// for :0 and freed again can be taken by any outgoing connection of a parallel test before the
// server binds it. Ports are handed out once per test binary.
func freeAddr(t *testing.T) string {
	t.Helper()
	freePorts.Lock()
	defer freePorts.Unlock()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if freePorts.given[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		freePorts.given[port] = true
		return l.Addr().String()
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// TestRunActivatorWiring runs the real main wiring on loopback with fake
// API clients: a Revision, its private Endpoints pointing at a pod that
// answers the queue probe, and a real stat server. The request is proxied,
// the stat server gets the poke, readiness holds although nothing else is
// reachable, and cancelling the context (SIGTERM) drains and returns.
func TestRunActivatorWiring(t *testing.T) {
	for _, autoscalerUp := range []bool{true, false} {
		t.Run("autoscaler up "+strconv.FormatBool(autoscalerUp), func(t *testing.T) { testWiring(t, autoscalerUp) })
	}
}

// testWiring: with the autoscaler down (#6529) readiness and warm traffic
// are unaffected; only the metric shows it.
func testWiring(t *testing.T, autoscalerUp bool) {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("K-Network-Probe") == "queue" {
			io.WriteString(w, "queue")
			return
		}
		io.WriteString(w, "hello from "+r.Header.Get("K-Proxy-Request"))
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
	if autoscalerUp {
		go ss.Serve(statLis)
		defer ss.Shutdown(context.Background())
	} else {
		statLis.Close() // connections are refused
	}

	rev := &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rev", UID: "uid-1",
		Labels: map[string]string{"serving.knative.dev/service": "svc", "serving.knative.dev/configuration": "cfg"}}}
	serving := servingfake.NewSimpleClientset(rev)
	kube := kubefake.NewSimpleClientset(&corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rev-private", Labels: map[string]string{
			endpoints.ServiceTypeLabel: "Private", endpoints.RevisionLabel: "rev", endpoints.RevisionUIDLabel: "uid-1"}},
		Subsets: []corev1.EndpointSubset{{NotReadyAddresses: []corev1.EndpointAddress{{IP: podHost}},
			Ports: []corev1.EndpointPort{{Name: "http", Port: int32(podPort)}}}},
	})

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

	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Host = "rev.ns.svc.cluster.local"
	req.Header.Set(coldstart.RequestHeader, "1")
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello from activator" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	// The pod's probe races the request: either answer is right, but it
	// must be one of them, and a cold one names the pod.
	tl, warm, err := coldstart.ParseHeader(resp.Header.Get(coldstart.ResponseHeader))
	if err != nil || (!warm && tl.Pod != net.JoinHostPort(podHost, podPortStr)) {
		t.Fatalf("%s: %q (%v)", coldstart.ResponseHeader, resp.Header.Get(coldstart.ResponseHeader), err)
	}
	t.Logf("%s: %s", coldstart.ResponseHeader, resp.Header.Get(coldstart.ResponseHeader))
	if autoscalerUp {
		select {
		case m := <-stats:
			if m.Key.Name != "rev" || m.Stat.PodName != "activator-0" {
				t.Fatalf("first stat %+v", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no stat reached the stat server")
		}
	}

	resp, err = http.Get("http://" + e.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	// As upstream's page, the instrument's scope is in otel_scope_* labels beside peer.
	reachable := regexp.MustCompile(`kn_activator_stats_conn_reachable\{otel_scope_name="knative.dev/serving/pkg/activator",[^}]*peer="autoscaler"\} 1`)
	if !autoscalerUp {
		reachable = regexp.MustCompile(`kn_activator_stats_conn_reachable\{[^}]*peer="autoscaler"\} 0`)
	}
	if !reachable.Match(b) {
		t.Errorf("metrics lack %s", reachable)
	}
	// The request to the pod, measured as upstream's otelhttp transport measures it.
	toPod := regexp.MustCompile(`http_client_request_duration_seconds_count\{http_request_method="GET",http_response_status_code="200",` +
		`k8s_namespace_name="ns",kn_configuration_name="cfg",kn_revision_name="rev",kn_service_name="svc",network_protocol_name="http",` +
		`network_protocol_version="1.1",otel_scope_name="go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",[^}]*\} [1-9]`)
	if !toPod.Match(b) {
		t.Errorf("metrics lack %s", toPod)
	}
	for _, want := range []string{"http_server_request_duration_seconds_bucket", "kn_revision_request_active", "http_client_request_body_size_bytes_bucket"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runActivator: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runActivator did not return after SIGTERM")
	}
}
