package lifecycle

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	fakekube "k8s.io/client-go/kubernetes/fake"
	fakenet "knative.dev/networking/pkg/client/clientset/versioned/fake"
	fakeserving "knative.dev/serving/pkg/client/clientset/versioned/fake"
)

// loopbackCert writes a self-signed certificate for 127.0.0.1 and its key, and returns their files and
// a pool trusting it.
func loopbackCert(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(c)
	return certFile, keyFile, roots
}

// runWithObservability runs the process with config-observability data obs; it returns the metrics
// address once it listens, or the error Run ended with.
func runWithObservability(t *testing.T, obs map[string]string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	kube := fakekube.NewSimpleClientset(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: "config-observability"}, Data: obs})
	cfg := Config{StatsAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Namespace: sysNS,
		PodName: podNam, PodIP: podIP, LoggingName: "config-logging", ObservabilityName: "config-observability",
		ShutdownTimeout: 5 * time.Second}
	d := Deps{Kube: kube, Serving: fakeserving.NewSimpleClientset(), Networking: fakenet.NewSimpleClientset(),
		Dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()), Prober: okProber{}}
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, d, ready, zaptest.NewLogger(t).Sugar(), zap.NewAtomicLevel()) }()
	select {
	case addrs := <-ready:
		t.Cleanup(func() {
			cancel()
			<-done
		})
		return addrs[1], nil
	case err := <-done:
		cancel()
		return "", err
	}
}

// TestMetricsTLS: with metrics-protocol prometheus and METRICS_PROMETHEUS_TLS_CERT/KEY the metrics port
// serves HTTPS only (TLS 1.3 by default, as upstream); with another protocol it stays plain; an invalid
// METRICS_PROMETHEUS_TLS_* stops the start with an error naming it.
func TestMetricsTLS(t *testing.T) {
	certFile, keyFile, roots := loopbackCert(t)
	get := func(url string, tc *tls.Config) (int, error) {
		tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	tls13 := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	tls12 := &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12}

	for _, tc := range []struct {
		name      string
		protocol  string
		env       map[string]string
		wantErr   string
		wantHTTPS bool
	}{
		{name: "prometheus with cert and key", protocol: "prometheus", wantHTTPS: true,
			env: map[string]string{"METRICS_PROMETHEUS_TLS_CERT": certFile, "METRICS_PROMETHEUS_TLS_KEY": keyFile}},
		{name: "none with cert and key", protocol: "none",
			env: map[string]string{"METRICS_PROMETHEUS_TLS_CERT": certFile, "METRICS_PROMETHEUS_TLS_KEY": keyFile}},
		{name: "prometheus without TLS", protocol: "prometheus"},
		{name: "prometheus with a bad version", protocol: "prometheus", wantErr: "METRICS_PROMETHEUS_TLS_MIN_VERSION",
			env: map[string]string{"METRICS_PROMETHEUS_TLS_CERT": certFile, "METRICS_PROMETHEUS_TLS_KEY": keyFile,
				"METRICS_PROMETHEUS_TLS_MIN_VERSION": "1.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			addr, err := runWithObservability(t, map[string]string{"metrics-protocol": tc.protocol})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Run = %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := get("http://"+addr+"/metrics", nil)
			secure, err13 := get("https://"+addr+"/metrics", tls13)
			_, err12 := get("https://"+addr+"/metrics", tls12)
			if tc.wantHTTPS {
				if plain == http.StatusOK || secure != http.StatusOK || err12 == nil {
					t.Errorf("plain %d, TLS 1.3 %d (%v), TLS 1.2 error %v; want HTTPS with TLS 1.3 only", plain, secure, err13, err12)
				}
			} else if plain != http.StatusOK || err13 == nil {
				t.Errorf("plain %d, TLS 1.3 %d; want plain HTTP", plain, secure)
			}
		})
	}
}
