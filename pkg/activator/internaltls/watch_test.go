package internaltls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls/internaltlstest"
)

// handshakeSerial opens a new TLS connection to addr, trusting ca, and
// returns the serial of the certificate served (-1 when the handshake fails).
func handshakeSerial(t *testing.T, addr string, ca *internaltlstest.CA) int64 {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "kn-routing", MinVersion: tls.VersionTLS13})
	if err != nil {
		return -1
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestWatcherRotation: a TLS listener whose GetCertificate is the Store's,
// fed by the Watcher from a (fake) API: the Secret's certificate is served,
// a rotated one is served to the next connection without any restart, a
// garbage update or a deletion keeps the last good one, and trust bundles
// come and go with their label.
func TestWatcherRotation(t *testing.T) {
	ca := internaltlstest.NewCA(t, "ca")
	bundleCA := internaltlstest.NewCA(t, "bundle")
	kube := kubefake.NewClientset()
	core, logs := observer.New(zap.InfoLevel)
	s := internaltls.NewStore(ns, zap.New(core).Sugar())
	w := internaltls.NewWatcher(kube, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if !w.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(l, &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS13})
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	addr := l.Addr().String()

	if got := handshakeSerial(t, addr, ca); got != -1 {
		t.Fatalf("served serial %d before any Secret", got)
	}
	secrets := kube.CoreV1().Secrets(ns)
	sec := secret(leafData(ca, ca.Issue(t, 1, "kn-routing", internaltls.ServerName)))
	if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "serial 1 served", func() bool { return handshakeSerial(t, addr, ca) == 1 })

	sec = secret(leafData(ca, ca.Issue(t, 2, "kn-routing", internaltls.ServerName)))
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "rotated serial 2 served", func() bool { return handshakeSerial(t, addr, ca) == 2 })

	// A garbage update, then a deletion: each is logged once, and neither
	// takes the last good certificate away.
	sec = secret(map[string][]byte{internaltls.CertKey: []byte("garbage"), internaltls.KeyKey: []byte("garbage")})
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "garbage logged", func() bool { return logs.FilterMessageSnippet("Ignoring secret").Len() == 1 })
	if got := handshakeSerial(t, addr, ca); got != 2 {
		t.Fatalf("after a garbage update, served serial %d, want the last good 2", got)
	}
	if err := secrets.Delete(ctx, internaltls.SecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "deletion logged", func() bool { return logs.FilterMessageSnippet("was deleted").Len() == 1 })
	cms := kube.CoreV1().ConfigMaps(ns)
	bundle := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "knative-bundle",
		Labels: map[string]string{internaltls.TrustBundleLabel: "true"}}, Data: map[string]string{"ca.pem": string(bundleCA.PEM)}}
	if _, err := cms.Create(ctx, bundle, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := x509.NewCertPool()
	want.AddCert(ca.Cert)
	want.AddCert(bundleCA.Cert)
	testutil.Eventually(t, "bundle trusted", func() bool { return s.Roots().Equal(want) })
	if got := handshakeSerial(t, addr, ca); got != 2 {
		t.Fatalf("after the Secret's deletion, served serial %d, want the last good 2", got)
	}

	bundle.Labels = nil
	if _, err := cms.Update(ctx, bundle, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = x509.NewCertPool()
	want.AddCert(ca.Cert)
	testutil.Eventually(t, "unlabelled bundle dropped", func() bool { return s.Roots().Equal(want) })
}
