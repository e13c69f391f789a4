package main

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
	kubefake "k8s.io/client-go/kubernetes/fake"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/observability"
)

// metricsCert writes a self-signed certificate for 127.0.0.1 and its key; it returns their files and a
// pool trusting the certificate.
func metricsCert(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
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

// TestMetricsTLS runs the activator's wiring with config-observability metrics-protocol prometheus and
// METRICS_PROMETHEUS_TLS_CERT/KEY: the metrics port answers HTTPS (TLS 1.3 by default) and refuses
// plain HTTP; an invalid METRICS_PROMETHEUS_TLS_* stops the start with an error naming it.
func TestMetricsTLS(t *testing.T) {
	certFile, keyFile, roots := metricsCert(t)
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{name: "cert and key", env: map[string]string{"METRICS_PROMETHEUS_TLS_CERT": certFile, "METRICS_PROMETHEUS_TLS_KEY": keyFile}},
		{name: "client auth without CA", wantErr: "METRICS_PROMETHEUS_TLS_CLIENT_CA_FILE", env: map[string]string{
			"METRICS_PROMETHEUS_TLS_CERT": certFile, "METRICS_PROMETHEUS_TLS_KEY": keyFile, "METRICS_PROMETHEUS_TLS_CLIENT_AUTH": "require"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			e, err := loadEnv(func(k string) string {
				return map[string]string{"POD_NAME": "activator-0", "POD_IP": "10.0.0.9", "DRAIN_TIMEOUT": "0s"}[k]
			})
			if err != nil {
				t.Fatal(err)
			}
			e.ClusterDomain = "cluster.local"
			e.http1Addr, e.h2cAddr, e.httpsAddr, e.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
			e.ProfilingPort = 0
			e.autoscalerURL = "ws://" + freeAddr(t)
			obs := observability.Defaults()
			obs.MetricsProtocol = observability.ProtocolPrometheus
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- runActivator(ctx, e, obs, kubefake.NewSimpleClientset(), servingfake.NewSimpleClientset(),
					endpoints.MeshDisabled, false, zaptest.NewLogger(t).Sugar(), zap.NewAtomicLevel())
			}()
			if tc.wantErr != "" {
				select {
				case err := <-done:
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("runActivator = %v, want an error naming %s", err, tc.wantErr)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("runActivator started")
				}
				return
			}
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			get := func(url string) int {
				resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
				if err != nil {
					return 0
				}
				defer resp.Body.Close()
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.StatusCode
			}
			testutil.Eventually(t, "HTTPS metrics", func() bool { return get("https://"+e.MetricsAddr+"/metrics") == http.StatusOK })
			if code := get("http://" + e.MetricsAddr + "/metrics"); code == http.StatusOK {
				t.Error("plain HTTP got the metrics page")
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
		})
	}
}
