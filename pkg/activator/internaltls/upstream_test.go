package internaltls_test

// Differential tests against upstream's activator certificate cache
// (knative.dev/serving v0.50.0 pkg/activator/certificate) and config-network
// parser: the same Secret and ConfigMaps give the same certificate served and
// the same trust roots, and the same queue-proxy certificates are accepted.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/certificates"
	netcfg "knative.dev/networking/pkg/config"
	fakekubeclient "knative.dev/pkg/client/injection/kube/client/fake"
	fakensconfigmapinformer "knative.dev/pkg/injection/clients/namespacedkube/informers/core/v1/configmap/fake"
	fakenssecretinformer "knative.dev/pkg/injection/clients/namespacedkube/informers/core/v1/secret/fake"
	rtesting "knative.dev/pkg/reconciler/testing"
	"knative.dev/pkg/system"
	upcert "knative.dev/serving/pkg/activator/certificate"
	uphandler "knative.dev/serving/pkg/activator/handler"
	upnetworking "knative.dev/serving/pkg/networking"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls/internaltlstest"
)

func TestUpstreamNames(t *testing.T) {
	for _, c := range []struct{ name, thaw, up string }{
		{"secret", internaltls.SecretName, netcfg.ServingRoutingCertName},
		{"cert key", internaltls.CertKey, certificates.CertName},
		{"key key", internaltls.KeyKey, certificates.PrivateKeyName},
		{"CA key", internaltls.CAKey, certificates.CaCertName},
		{"trust-bundle label", internaltls.TrustBundleLabel, networking.TrustBundleLabelKey},
		{"ServerName", internaltls.ServerName, certificates.LegacyFakeDnsName},
		{"user SAN", internaltls.UserSAN("My-NS"), certificates.DataPlaneUserSAN("My-NS")},
		{"config key", internaltls.ConfigKey, netcfg.SystemInternalTLSKey},
		{"legacy config key", internaltls.LegacyConfigKey, netcfg.InternalEncryptionKey},
	} {
		if c.thaw != c.up {
			t.Errorf("%s: Thaw %q, upstream %q", c.name, c.thaw, c.up)
		}
	}
	if internaltls.PodHTTPSPort != upnetworking.BackendHTTPSPort || internaltls.ServiceHTTPSPort != networking.ServiceHTTPSPort {
		t.Errorf("ports: Thaw %d/%d, upstream %d/%d", internaltls.PodHTTPSPort, internaltls.ServiceHTTPSPort,
			upnetworking.BackendHTTPSPort, networking.ServiceHTTPSPort)
	}
}

// TestUpstreamEnabled: Thaw's reading of config-network agrees with upstream's parser, errors included.
func TestUpstreamEnabled(t *testing.T) {
	for _, data := range []map[string]string{
		nil,
		{"system-internal-tls": "enabled"},
		{"system-internal-tls": "ENABLED"},
		{"system-internal-tls": "disabled"},
		{"system-internal-tls": "on"},
		{"internal-encryption": "true"},
		{"internal-encryption": "True"},
		{"internal-encryption": "1"},
		{"internal-encryption": "false", "system-internal-tls": "enabled"},
		{"internal-encryption": "true", "system-internal-tls": "disabled"},
		{"internal-encryption": "yes"},
	} {
		up, upErr := netcfg.NewConfigFromMap(data)
		got, err := internaltls.Enabled(data)
		if (upErr != nil) != (err != nil) {
			t.Errorf("%v: Thaw error %v, upstream error %v", data, err, upErr)
			continue
		}
		if upErr == nil && got != up.SystemInternalTLSEnabled() {
			t.Errorf("%v: Thaw %v, upstream %v", data, got, up.SystemInternalTLSEnabled())
		}
	}
}

// TestUpstreamCertCache feeds the same objects to upstream's CertCache and
// Thaw's Store and compares what each serves and trusts, and which
// queue-proxy certificates each one's dial accepts.
func TestUpstreamCertCache(t *testing.T) {
	t.Setenv(system.NamespaceEnvKey, ns)
	ca, ca2, bundleCA := internaltlstest.NewCA(t, "ca"), internaltlstest.NewCA(t, "ca2"), internaltlstest.NewCA(t, "bundle")
	activatorCert := ca.Issue(t, 1, "kn-routing", internaltls.ServerName)
	bundle := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "knative-bundle",
		Labels: map[string]string{internaltls.TrustBundleLabel: "true"}}, Data: map[string]string{"ca.pem": string(bundleCA.PEM)}}
	for _, tc := range []struct {
		name   string
		secret *corev1.Secret
		bundle *corev1.ConfigMap
		// Which of the queue-proxy certificates below are accepted.
		wantAccepted []bool
	}{
		{name: "CA in the secret", secret: secret(leafData(ca, activatorCert)), wantAccepted: []bool{true, false, false, false, false, false}},
		{name: "CA in a trust bundle only", secret: secret(leafData(nil, activatorCert)), bundle: bundle,
			wantAccepted: []bool{false, true, false, false, false, false}},
		{name: "CAs in both", secret: secret(leafData(ca2, activatorCert)), bundle: bundle,
			wantAccepted: []bool{false, true, true, false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel, informers := rtesting.SetupFakeContextWithCancel(t)
			fakekubeclient.Get(ctx).CoreV1().Secrets(ns).Create(ctx, tc.secret, metav1.CreateOptions{})
			fakenssecretinformer.Get(ctx).Informer().GetIndexer().Add(tc.secret)
			if tc.bundle != nil {
				fakekubeclient.Get(ctx).CoreV1().ConfigMaps(ns).Create(ctx, tc.bundle, metav1.CreateOptions{})
				fakensconfigmapinformer.Get(ctx).Informer().GetIndexer().Add(tc.bundle)
			}
			up, err := upcert.NewCertCache(ctx)
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			wait, err := rtesting.RunAndSyncInformers(ctx, informers...)
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			defer func() { cancel(); wait() }()

			s := internaltls.NewStore(ns, zaptest.NewLogger(t).Sugar())
			s.SetSecret(tc.secret)
			if tc.bundle != nil {
				s.SetBundle(tc.bundle)
			}

			// The client side is compared by what each dial does (upstream's
			// config is read under its own lock only): the same certificates
			// accepted and refused, the same ServerName and TLS versions offered.
			thawDial := (&internaltls.Dialer{Trust: s}).DialTLSContext
			upDial := up.TLSContext()
			rev := types.NamespacedName{Namespace: "ns", Name: "rev"}
			upCtx := uphandler.WithRevisionAndID(context.Background(), nil, rev)
			thawCtx := internaltls.WithNamespace(context.Background(), rev.Namespace)
			var pods []queueProxyCert
			for _, qp := range []struct {
				name   string
				issuer *internaltlstest.CA
				sans   []string
			}{
				{"upstream's queue-proxy certificate", ca, []string{"kn-user-ns", internaltls.ServerName}},
				{"signed by the bundle's CA", bundleCA, []string{"kn-user-ns", internaltls.ServerName}},
				{"signed by ca2", ca2, []string{"kn-user-ns", internaltls.ServerName}},
				{"another namespace", ca, []string{"kn-user-other", internaltls.ServerName}},
				{"no data-plane name", ca, []string{"kn-user-ns"}},
				{"routing SANs only", ca, []string{"kn-routing", internaltls.ServerName}},
			} {
				addr, hellos := tlsEcho(t, qp.issuer.Issue(t, 9, qp.sans...).TLS)
				pods = append(pods, queueProxyCert{qp.name, addr, hellos})
			}
			accepted := func(dial func(context.Context, string, string) (net.Conn, error), ctx context.Context) []bool {
				var out []bool
				for _, p := range pods {
					out = append(out, dialOnce(dial, ctx, p.addr) == nil)
				}
				return out
			}
			if got := accepted(thawDial, thawCtx); !slices.Equal(got, tc.wantAccepted) {
				t.Fatalf("Thaw accepted %v, want %v", got, tc.wantAccepted)
			}
			var thawHellos []*tls.ClientHelloInfo
			for _, p := range pods {
				thawHellos = append(thawHellos, nextHello(t, p.hellos))
			}
			// Upstream's cache rebuilds its pool from informer events: wait for them.
			testutil.Eventually(t, "upstream's dial to decide as Thaw's", func() bool { return slices.Equal(accepted(upDial, upCtx), tc.wantAccepted) })

			// Upstream's GetCertificate reads without its lock; its dial's
			// read lock (above) orders this read after the informer's writes.
			upServed, _ := up.GetCertificate(nil)
			thawServed, err := s.GetCertificate(nil)
			if err != nil || upServed == nil || !upServed.Leaf.Equal(thawServed.Leaf) {
				t.Fatalf("served certificates differ (Thaw error %v)", err)
			}
			for i, p := range pods {
				upHello, thawHello := nextHello(t, p.hellos), thawHellos[i]
				if upHello.ServerName != thawHello.ServerName || !slices.Equal(upHello.SupportedVersions, thawHello.SupportedVersions) {
					t.Errorf("%s: ClientHello upstream %q %x, Thaw %q %x", p.name, upHello.ServerName, upHello.SupportedVersions,
						thawHello.ServerName, thawHello.SupportedVersions)
				}
			}
		})
	}
}

type queueProxyCert struct {
	name   string
	addr   string
	hellos chan *tls.ClientHelloInfo
}

func nextHello(t *testing.T, c chan *tls.ClientHelloInfo) *tls.ClientHelloInfo {
	t.Helper()
	select {
	case h := <-c:
		return h
	case <-time.After(testutil.Timeout):
		t.Fatal("no ClientHello")
		return nil
	}
}

func dialOnce(dial func(context.Context, string, string) (net.Conn, error), ctx context.Context, addr string) error {
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// tlsEcho accepts TLS connections presenting cert and completes handshakes;
// the ClientHellos are kept in the channel, newest dropped once it is full.
func tlsEcho(t *testing.T, cert tls.Certificate) (string, chan *tls.ClientHelloInfo) {
	t.Helper()
	hellos := make(chan *tls.ClientHelloInfo, 1024)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case hellos <- h:
			default:
			}
			return nil, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return l.Addr().String(), hellos
}
