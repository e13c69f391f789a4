package internaltls_test

import (
	"testing"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/thaw-dev/thaw/pkg/activator/internaltls"
	"github.com/thaw-dev/thaw/pkg/activator/internaltls/internaltlstest"
)

// FuzzStore: whatever a Secret or a trust bundle holds, the store neither
// panics nor loses a good certificate to bad bytes.
func FuzzStore(f *testing.F) {
	ca := internaltlstest.NewCA(f, "ca")
	good := ca.Issue(f, 1, "kn-routing")
	f.Add(good.CertPEM, good.KeyPEM, ca.PEM, string(ca.PEM))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"), []byte{}, []byte("-----BEGIN X-----"), "garbage")
	f.Add([]byte{}, []byte{}, []byte{0}, "")
	f.Fuzz(func(t *testing.T, cert, key, caPEM []byte, bundle string) {
		s := internaltls.NewStore(ns, zap.NewNop().Sugar())
		s.SetSecret(secret(leafData(ca, good)))
		s.SetSecret(secret(map[string][]byte{internaltls.CertKey: cert, internaltls.KeyKey: key, internaltls.CAKey: caPEM}))
		s.SetBundle(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b"}, Data: map[string]string{"k": bundle}})
		c, err := s.GetCertificate(nil)
		if err != nil || c == nil {
			t.Fatalf("lost the good certificate: %v", err)
		}
		if s.Roots() == nil {
			t.Fatal("nil roots")
		}
	})
}
