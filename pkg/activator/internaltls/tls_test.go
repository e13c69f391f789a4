package internaltls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls/internaltlstest"
)

const ns = "knative-serving"

func secret(data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: internaltls.SecretName}, Data: data}
}

func leafData(ca *internaltlstest.CA, l *internaltlstest.Leaf) map[string][]byte {
	d := map[string][]byte{internaltls.CertKey: l.CertPEM, internaltls.KeyKey: l.KeyPEM}
	if ca != nil {
		d[internaltls.CAKey] = ca.PEM
	}
	return d
}

func served(t *testing.T, s *internaltls.Store) int64 {
	t.Helper()
	c, err := s.GetCertificate(nil)
	if err != nil {
		return -1
	}
	return c.Leaf.SerialNumber.Int64()
}

// TestStoreSecret: each step's Secret is applied in order; a bad one keeps
// the last good certificate (and CA) with one error line.
func TestStoreSecret(t *testing.T) {
	ca := internaltlstest.NewCA(t, "ca")
	ca2 := internaltlstest.NewCA(t, "ca2")
	one := ca.Issue(t, 1, "kn-routing", internaltls.ServerName)
	two := ca.Issue(t, 2, "kn-routing", internaltls.ServerName)
	type step struct {
		name       string
		data       map[string][]byte
		wantSerial int64 // -1: no certificate
		wantCA     *internaltlstest.CA
		wantErrors int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{name: "valid then rotated", steps: []step{
			{name: "first", data: leafData(ca, one), wantSerial: 1, wantCA: ca},
			{name: "rotated", data: leafData(ca2, two), wantSerial: 2, wantCA: ca2},
		}},
		{name: "missing keys first", steps: []step{
			{name: "no key", data: map[string][]byte{internaltls.CertKey: one.CertPEM}, wantSerial: -1, wantErrors: 1},
			{name: "fixed", data: leafData(nil, one), wantSerial: 1},
		}},
		{name: "garbage after good", steps: []step{
			{name: "good", data: leafData(ca, one), wantSerial: 1, wantCA: ca},
			{name: "garbage cert", data: map[string][]byte{internaltls.CertKey: []byte("garbage"), internaltls.KeyKey: one.KeyPEM, internaltls.CAKey: ca.PEM},
				wantSerial: 1, wantCA: ca, wantErrors: 1},
			{name: "key of another cert", data: map[string][]byte{internaltls.CertKey: two.CertPEM, internaltls.KeyKey: one.KeyPEM, internaltls.CAKey: ca.PEM},
				wantSerial: 1, wantCA: ca, wantErrors: 1},
			{name: "garbage CA", data: map[string][]byte{internaltls.CertKey: two.CertPEM, internaltls.KeyKey: two.KeyPEM, internaltls.CAKey: []byte("-----BEGIN nonsense")},
				wantSerial: 2, wantCA: ca, wantErrors: 1},
			{name: "CA removed", data: leafData(nil, two), wantSerial: 2},
		}},
		{name: "empty secret", steps: []step{
			{name: "empty", data: nil, wantSerial: -1, wantErrors: 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			s := internaltls.NewStore(ns, zap.New(core).Sugar())
			for _, st := range tc.steps {
				before := logs.FilterLevelExact(zap.ErrorLevel).Len()
				s.SetSecret(secret(st.data))
				if got := served(t, s); got != st.wantSerial {
					t.Errorf("%s: serving serial %d, want %d", st.name, got, st.wantSerial)
				}
				want := x509.NewCertPool()
				if st.wantCA != nil {
					want.AddCert(st.wantCA.Cert)
				}
				if !s.Roots().Equal(want) {
					t.Errorf("%s: roots differ from the expected CA", st.name)
				}
				if n := logs.FilterLevelExact(zap.ErrorLevel).Len() - before; n != st.wantErrors {
					t.Errorf("%s: %d error lines, want %d: %v", st.name, n, st.wantErrors, logs.All())
				}
			}
		})
	}
}

func TestStoreOtherSecretIgnored(t *testing.T) {
	ca := internaltlstest.NewCA(t, "ca")
	s := internaltls.NewStore(ns, zaptest.NewLogger(t).Sugar())
	other := secret(leafData(ca, ca.Issue(t, 1, "x")))
	other.Name = "something-else"
	s.SetSecret(other)
	other = secret(leafData(ca, ca.Issue(t, 1, "x")))
	other.Namespace = "default"
	s.SetSecret(other)
	if _, err := s.GetCertificate(nil); !errors.Is(err, internaltls.ErrNoCertificate) {
		t.Fatalf("GetCertificate: %v, want ErrNoCertificate", err)
	}
}

// TestStoreBundles: trust-bundle ConfigMaps add to the Secret's CA; invalid
// values are skipped; deletion removes them.
func TestStoreBundles(t *testing.T) {
	ca, b1, b2 := internaltlstest.NewCA(t, "ca"), internaltlstest.NewCA(t, "b1"), internaltlstest.NewCA(t, "b2")
	s := internaltls.NewStore(ns, zaptest.NewLogger(t).Sugar())
	s.SetSecret(secret(leafData(ca, ca.Issue(t, 1, "kn-routing"))))
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bundle",
		Labels: map[string]string{internaltls.TrustBundleLabel: "true"}},
		Data: map[string]string{"a.pem": string(b1.PEM) + string(b2.PEM), "bad.pem": "not a certificate"}}
	s.SetBundle(cm)
	want := x509.NewCertPool()
	for _, c := range []*internaltlstest.CA{ca, b1, b2} {
		want.AddCert(c.Cert)
	}
	if !s.Roots().Equal(want) {
		t.Fatal("roots lack the bundle's CAs")
	}
	s.DeleteBundle("bundle")
	want = x509.NewCertPool()
	want.AddCert(ca.Cert)
	if !s.Roots().Equal(want) {
		t.Fatal("roots kept a deleted bundle")
	}
}

// queueProxy is a TLS server presenting cert, standing in for queue-proxy's :8112.
func queueProxy(t *testing.T, cert tls.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "plain text", http.StatusBadRequest)
			return
		}
		io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestDialer: the activator trusts a queue-proxy only with the CA from the
// store, the ServerName data-plane.knative.dev and the SAN of the revision's
// namespace, over HTTP/1.1 and HTTP/2.
func TestDialer(t *testing.T) {
	ca, other := internaltlstest.NewCA(t, "ca"), internaltlstest.NewCA(t, "other")
	for _, tc := range []struct {
		name    string
		issuer  *internaltlstest.CA
		sans    []string
		ns      string
		wantErr string
	}{
		{name: "upstream's queue-proxy SANs", issuer: ca, sans: []string{"kn-user-ns", internaltls.ServerName}, ns: "ns"},
		{name: "namespace lowered", issuer: ca, sans: []string{"kn-user-ns", internaltls.ServerName}, ns: "NS"},
		{name: "another namespace's pod", issuer: ca, sans: []string{"kn-user-other", internaltls.ServerName}, ns: "ns", wantErr: `lack "kn-user-ns"`},
		{name: "no data-plane name", issuer: ca, sans: []string{"kn-user-ns"}, ns: "ns", wantErr: "certificate is valid for kn-user-ns"},
		{name: "untrusted CA", issuer: other, sans: []string{"kn-user-ns", internaltls.ServerName}, ns: "ns", wantErr: "unknown authority"},
		{name: "no namespace", issuer: ca, sans: []string{"kn-user-ns", internaltls.ServerName}, wantErr: internaltls.ErrNoNamespace.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			qp := queueProxy(t, tc.issuer.Issue(t, 7, tc.sans...).TLS)
			s := internaltls.NewStore(ns, zaptest.NewLogger(t).Sugar())
			s.SetSecret(secret(leafData(ca, ca.Issue(t, 1, "kn-routing", internaltls.ServerName))))
			base := &http.Transport{DialContext: (&net.Dialer{}).DialContext}
			h1, h2 := internaltls.Transports(base, base.Clone(), s)
			for _, rt := range []struct {
				proto string
				tr    *http.Transport
			}{{"HTTP/1.1", h1}, {"HTTP/2.0", h2}} {
				ctx := context.Background()
				if tc.ns != "" {
					ctx = internaltls.WithNamespace(ctx, tc.ns)
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, qp.URL, nil)
				resp, err := (&http.Client{Transport: rt.tr, Timeout: 10 * time.Second}).Do(req)
				if tc.wantErr != "" {
					if err == nil {
						resp.Body.Close()
						t.Fatalf("%s: request succeeded, want error %q", rt.proto, tc.wantErr)
					}
					if !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("%s: error %v, want %q", rt.proto, err, tc.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", rt.proto, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != rt.proto {
					t.Fatalf("%s: got %d %q", rt.proto, resp.StatusCode, b)
				}
				rt.tr.CloseIdleConnections()
			}
		})
	}
}

// TestDialerRefusedIsDialError: a refused TCP dial comes back as a dial
// error, which the proxy retries on another pod.
func TestDialerRefusedIsDialError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := &internaltls.Dialer{Trust: internaltls.NewStore(ns, zap.NewNop().Sugar())}
	_, err = d.DialTLSContext(internaltls.WithNamespace(context.Background(), "ns"), "tcp", addr)
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("error %v, want a dial *net.OpError", err)
	}
}
