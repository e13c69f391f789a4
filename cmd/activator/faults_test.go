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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/faultinject"
	"github.com/thaw-dev/thaw/pkg/observability"
	"github.com/thaw-dev/thaw/pkg/wire"
)

type nopSink struct{}

func (nopSink) Poke(wire.StatMessage)     {}
func (nopSink) Report([]wire.StatMessage) {}

// TestFaultSwitch: without THAW_FAULT_INJECTION=enabled nothing is wrapped, the ConfigMap gets no
// handler and no metric is registered; a wrong value says so in one line.
func TestFaultSwitch(t *testing.T) {
	for _, tc := range []struct {
		value    string
		on       bool
		errLines int
	}{
		{value: "", on: false},
		{value: "disabled", on: false},
		{value: "true", on: false, errLines: 1},
		{value: "enabled", on: true},
	} {
		t.Run(tc.value, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			reg := prometheus.NewRegistry()
			f := newFaults(tc.value, clock.RealClock{}, reg, zap.New(core).Sugar())
			if (f.inj != nil) != tc.on {
				t.Fatalf("injector built: %v, want %v", f.inj != nil, tc.on)
			}
			if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != tc.errLines {
				t.Errorf("%d error lines, want %d", n, tc.errLines)
			}
			ws := f.watches()
			if watched := len(ws) == 1 && ws[0].Name() == faultinject.ConfigMapName; watched != tc.on {
				t.Errorf("ConfigMap handled: %v, want %v", watched, tc.on)
			}
			if len(ws) > 1 {
				t.Errorf("%d watches, want at most the fault ConfigMap's", len(ws))
			}
			var s nopSink
			rt := http.DefaultTransport
			if wrapped := f.sink(s, clock.RealClock{}) != s; wrapped != tc.on {
				t.Errorf("sink wrapped: %v, want %v", wrapped, tc.on)
			}
			if wrapped := f.probeTransport(rt) != rt; wrapped != tc.on {
				t.Errorf("probe transport wrapped: %v, want %v", wrapped, tc.on)
			}
			if w := f.podTransport(nil); (w != nil) != tc.on {
				t.Errorf("pod transport wrapper set: %v, want %v", w != nil, tc.on)
			}
			if mfs, _ := reg.Gather(); !tc.on && len(mfs) > 0 {
				t.Errorf("switch off, yet %d metrics registered", len(mfs))
			}
		})
	}
}

// TestFaultInjectionWiring runs the activator's real wiring with the fault ConfigMap present: with
// the switch its pod-error fault answers 500 (and is counted), and deleting the ConfigMap ends it;
// without the switch the same ConfigMap changes nothing.
func TestFaultInjectionWiring(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run("switch "+strconv.FormatBool(on), func(t *testing.T) { testFaultWiring(t, on) })
	}
}

func testFaultWiring(t *testing.T, on bool) {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("K-Network-Probe") == "queue" {
			io.WriteString(w, "queue")
			return
		}
		io.WriteString(w, "pod")
	}))
	defer pod.Close()
	podHost, podPortStr, _ := net.SplitHostPort(strings.TrimPrefix(pod.URL, "http://"))
	podPort, _ := strconv.Atoi(podPortStr)

	rev := &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rev", UID: "uid-1"}}
	serving := servingfake.NewSimpleClientset(rev)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "knative-serving", Name: faultinject.ConfigMapName},
		Data: map[string]string{string(faultinject.PodError): "status=500"}}
	kube := kubefake.NewSimpleClientset(cm, &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rev-private", Labels: map[string]string{
			endpoints.ServiceTypeLabel: "Private", endpoints.RevisionLabel: "rev", endpoints.RevisionUIDLabel: "uid-1"}},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: podHost}},
			Ports: []corev1.EndpointPort{{Name: "http", Port: int32(podPort)}}}},
	})
	env := map[string]string{"POD_NAME": "activator-0", "POD_IP": "10.0.0.9", "DRAIN_TIMEOUT": "0s"}
	if on {
		env[faultinject.EnvVar] = faultinject.EnvEnabled
	}
	e, err := loadEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	e.ClusterDomain = "cluster.local"
	e.http1Addr, e.h2cAddr, e.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	e.ProfilingPort = 0
	e.autoscalerURL = "ws://" + freeAddr(t) // nobody listens: stats are not this test's concern

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runActivator(ctx, e, observability.Defaults(), kube, serving, endpoints.MeshDisabled, false,
			zaptest.NewLogger(t).Sugar(), zap.NewAtomicLevel())
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("runActivator did not return")
		}
	}()

	client := &http.Client{Timeout: 30 * time.Second}
	get := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+e.http1Addr+"/", nil)
		req.Host = "rev.ns.svc.cluster.local"
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.Header.Get(faultinject.Header)
	}
	metrics := func() string {
		resp, err := http.Get("http://" + e.MetricsAddr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	counted := `thaw_fault_injected_total{component="activator",fault="pod-error"}`

	if !on {
		waitFor(t, func() bool { code, _ := get(); return code == 200 })
		if code, hdr := get(); code != 200 || hdr != "" {
			t.Fatalf("switch off: %d %q, want the pod's 200", code, hdr)
		}
		if m := metrics(); strings.Contains(m, "thaw_fault_") {
			t.Error("switch off, yet fault metrics are exported")
		}
		return
	}
	waitFor(t, func() bool { code, hdr := get(); return code == 500 && hdr == string(faultinject.PodError) })
	if m := metrics(); !strings.Contains(m, counted) || !strings.Contains(m, "thaw_fault_injection_active") {
		t.Errorf("metrics lack the injected fault:\n%s", m)
	}
	if err := kube.CoreV1().ConfigMaps("knative-serving").Delete(ctx, faultinject.ConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { code, _ := get(); return code == 200 })
}
