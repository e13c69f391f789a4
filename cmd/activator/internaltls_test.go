package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls/internaltlstest"
	"github.com/thaw-dev/thaw/pkg/observability"
)

func routingSecret(ca *internaltlstest.CA, l *internaltlstest.Leaf) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "knative-serving", Name: internaltls.SecretName},
		Data: map[string][]byte{internaltls.CertKey: l.CertPEM, internaltls.KeyKey: l.KeyPEM, internaltls.CAKey: ca.PEM}}
}

// tlsPod is a revision pod as upstream's queue-proxy is with
// system-internal-tls: probes answered on the plain port, requests served on
// the TLS port with the certificate the control plane issues for the
// namespace (SANs kn-user-<ns> and data-plane.knative.dev).
type tlsPod struct {
	plainHost string
	plainPort int
	tlsPort   int
}

// startTLSPod starts a pod on host (a loopback address), its TLS port being
// tlsPort (0: any free one).
func startTLSPod(t *testing.T, host string, tlsPort int, cert tls.Certificate) tlsPod {
	t.Helper()
	listen := func(port int) net.Listener {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	plain := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("K-Network-Probe") == "queue" {
			io.WriteString(w, "queue")
			return
		}
		http.Error(w, "request on the plain port", http.StatusBadRequest)
	}))
	plain.Listener.Close()
	plain.Listener = listen(0)
	plain.Start()
	t.Cleanup(plain.Close)
	secure := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "no TLS", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "tls "+r.Proto+" "+r.Header.Get("K-Proxy-Request"))
	}))
	secure.Listener.Close()
	secure.Listener = listen(tlsPort)
	secure.EnableHTTP2 = true
	secure.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	secure.StartTLS()
	t.Cleanup(secure.Close)
	return tlsPod{plainHost: host, plainPort: plain.Listener.Addr().(*net.TCPAddr).Port,
		tlsPort: secure.Listener.Addr().(*net.TCPAddr).Port}
}

// TestInternalTLSWiring runs the real main wiring with system-internal-tls on
// and a fake API: the activator serves HTTPS with the certificate of the
// Secret routing-serving-certs (HTTP/1.1, HTTP/2 by ALPN and prior-knowledge
// HTTP/2), proxies every request, from either port, to the pod's TLS port over
// TLS, verifying the namespace's SAN, and serves a rotated certificate to new
// connections without a restart, keeping it through a garbage update.
func TestInternalTLSWiring(t *testing.T) {
	ca := internaltlstest.NewCA(t, "knative-ca")
	pod := startTLSPod(t, "127.0.0.1", 0, ca.Issue(t, 100, "kn-user-ns", internaltls.ServerName).TLS)
	// A pod of namespace other whose certificate is namespace ns's: the
	// activator must refuse it (on the same TLS port, another loopback address).
	impostor := startTLSPod(t, "127.0.0.2", pod.tlsPort, ca.Issue(t, 101, "kn-user-ns", internaltls.ServerName).TLS)

	revision := func(ns, uid string) *servingv1.Revision {
		return &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rev", UID: types.UID(uid),
			Labels: map[string]string{"serving.knative.dev/service": "svc", "serving.knative.dev/configuration": "cfg"}}}
	}
	privateEndpoints := func(ns, uid string, p tlsPod) *corev1.Endpoints {
		return &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rev-private", Labels: map[string]string{
				endpoints.ServiceTypeLabel: "Private", endpoints.RevisionLabel: "rev", endpoints.RevisionUIDLabel: uid}},
			Subsets: []corev1.EndpointSubset{{NotReadyAddresses: []corev1.EndpointAddress{{IP: p.plainHost}},
				Ports: []corev1.EndpointPort{{Name: "http", Port: int32(p.plainPort)}}}},
		}
	}
	serving := servingfake.NewSimpleClientset(revision("ns", "uid-1"), revision("other", "uid-2"))
	kube := kubefake.NewSimpleClientset(privateEndpoints("ns", "uid-1", pod), privateEndpoints("other", "uid-2", impostor),
		routingSecret(ca, ca.Issue(t, 1, "kn-routing", internaltls.ServerName)))

	e, err := loadEnv(func(k string) string {
		return map[string]string{"POD_NAME": "activator-0", "POD_IP": "10.0.0.9", "DRAIN_TIMEOUT": "0s"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	e.ClusterDomain = "cluster.local"
	e.InternalTLS = true
	e.http1Addr, e.h2cAddr, e.httpsAddr, e.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	e.tlsPorts = internaltls.Ports{Pod: pod.tlsPort, ClusterIP: internaltls.ServiceHTTPSPort}
	e.ProfilingPort = 0
	e.autoscalerURL = "ws://" + freeAddr(t) // nobody listens: stats are not this test's concern

	obsCore, logs := observer.New(zap.InfoLevel)
	logger := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), obsCore)).Sugar()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runActivator(ctx, e, observability.Defaults(), kube, serving, endpoints.MeshDisabled, false,
			logger, zap.NewAtomicLevel())
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runActivator: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("runActivator did not return")
		}
	}()

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	// What an ingress does: a new connection each time, so each sees the certificate of the moment.
	clientTLS := func(alpn ...string) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "kn-routing", MinVersion: tls.VersionTLS13, NextProtos: alpn}
	}
	h1 := &http.Transport{TLSClientConfig: clientTLS(), DisableKeepAlives: true}
	h2alpn := &http.Transport{TLSClientConfig: clientTLS(), DisableKeepAlives: true, ForceAttemptHTTP2: true}
	h2prior := &http2.Transport{DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return (&tls.Dialer{Config: clientTLS()}).DialContext(ctx, network, addr) // no ALPN: prior knowledge
	}}
	var lastSerial int64
	host := "rev.ns.svc.cluster.local"
	get := func(rt http.RoundTripper, url string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		resp, err := (&http.Client{Transport: rt, Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		if resp.TLS != nil {
			lastSerial = resp.TLS.PeerCertificates[0].SerialNumber.Int64()
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	httpsURL := "https://" + e.httpsAddr + "/"
	waitFor(t, func() bool { code, _ := get(h1, httpsURL); return code == 200 })

	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
		url  string
		want string
	}{
		{"HTTPS HTTP/1.1", h1, httpsURL, "tls HTTP/1.1 activator"},
		{"HTTPS HTTP/2 by ALPN", h2alpn, httpsURL, "tls HTTP/2.0 activator"},
		{"HTTPS prior-knowledge HTTP/2", h2prior, httpsURL, "tls HTTP/2.0 activator"},
		{"plain :8012 still proxies over TLS", http.DefaultTransport, "http://" + e.http1Addr + "/", "tls HTTP/1.1 activator"},
	} {
		if code, body := get(tc.rt, tc.url); code != 200 || body != tc.want {
			t.Errorf("%s: got %d %q, want 200 %q", tc.name, code, body, tc.want)
		}
	}
	if get(h1, httpsURL); lastSerial != 1 {
		t.Fatalf("activator served serial %d, want 1", lastSerial)
	}
	host = "rev.other.svc.cluster.local"
	waitFor(t, func() bool {
		code, body := get(h1, httpsURL)
		return code == http.StatusBadGateway && strings.Contains(body, `lack "kn-user-other"`)
	})
	host = "rev.ns.svc.cluster.local"

	secrets := kube.CoreV1().Secrets("knative-serving")
	if _, err := secrets.Update(ctx, routingSecret(ca, ca.Issue(t, 2, "kn-routing", internaltls.ServerName)), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { get(h1, httpsURL); return lastSerial == 2 })

	bad := routingSecret(ca, ca.Issue(t, 3, "kn-routing"))
	bad.Data[internaltls.CertKey] = []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
	if _, err := secrets.Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return logs.FilterMessageSnippet("Ignoring secret knative-serving/"+internaltls.SecretName).Len() == 1
	})
	if code, body := get(h1, httpsURL); code != 200 || lastSerial != 2 {
		t.Fatalf("after a garbage Secret: %d %q, serial %d; want 200 and the last good serial 2", code, body, lastSerial)
	}
}

// TestInternalTLSEnv: ACTIVATOR_TLS_* are read as upstream reads them, TLS
// 1.3 by default, and an invalid one is an error naming it.
func TestInternalTLSEnv(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
		wantMin          uint16
		wantErr          string
	}{
		{name: "default", wantMin: tls.VersionTLS13},
		{name: "1.2", key: "ACTIVATOR_TLS_MIN_VERSION", value: "1.2", wantMin: tls.VersionTLS12},
		{name: "invalid", key: "ACTIVATOR_TLS_MIN_VERSION", value: "1.1", wantErr: "ACTIVATOR_TLS_MIN_VERSION"},
		{name: "invalid cipher", key: "ACTIVATOR_TLS_CIPHER_SUITES", value: "NOPE", wantErr: "ACTIVATOR_TLS_CIPHER_SUITES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.key != "" {
				t.Setenv(tc.key, tc.value)
			}
			itls, err := newInternalTLS(kubefake.NewClientset(), "knative-serving", nil, zap.NewNop().Sugar())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if itls.server.MinVersion != tc.wantMin || itls.server.GetCertificate == nil {
				t.Fatalf("server config: min %x, GetCertificate set %v", itls.server.MinVersion, itls.server.GetCertificate != nil)
			}
		})
	}
}

// TestInternalTLSOff: with system-internal-tls off (the default), nothing
// listens on the HTTPS port, as upstream, even with the Secret present.
func TestInternalTLSOff(t *testing.T) {
	ca := internaltlstest.NewCA(t, "knative-ca")
	kube := kubefake.NewSimpleClientset(routingSecret(ca, ca.Issue(t, 1, "kn-routing", internaltls.ServerName)))
	e, err := loadEnv(func(k string) string {
		return map[string]string{"POD_NAME": "activator-0", "POD_IP": "10.0.0.9", "DRAIN_TIMEOUT": "0s"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.InternalTLS || e.httpsAddr != ":8112" || e.tlsPorts != internaltls.DefaultPorts {
		t.Fatalf("defaults: InternalTLS %v, httpsAddr %q, tlsPorts %+v", e.InternalTLS, e.httpsAddr, e.tlsPorts)
	}
	e.ClusterDomain = "cluster.local"
	e.http1Addr, e.h2cAddr, e.httpsAddr, e.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	e.ProfilingPort = 0
	e.autoscalerURL = "ws://" + freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runActivator(ctx, e, observability.Defaults(), kube, servingfake.NewSimpleClientset(), endpoints.MeshDisabled, false,
			zaptest.NewLogger(t).Sugar(), zap.NewAtomicLevel())
	}()
	waitFor(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, "http://"+e.http1Addr+"/", nil)
		req.Header.Set("User-Agent", "kube-probe/1.36")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if c, err := net.DialTimeout("tcp", e.httpsAddr, 5*time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on the HTTPS port %s with system-internal-tls off", e.httpsAddr)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runActivator: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runActivator did not return")
	}
}
