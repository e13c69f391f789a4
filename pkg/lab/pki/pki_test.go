package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnsureIsStableAndValid(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, NodeName: "thaw-node",
		IPs: []net.IP{net.ParseIP("10.88.0.1"), net.ParseIP("10.96.0.1")}, DNSNames: []string{"kubernetes.default.svc"}}
	f1, err := Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := Ensure(o)
	if err != nil {
		t.Fatal(err)
	}
	if f1.AdminToken == "" || f1.AdminToken != f2.AdminToken || f1.KubeletToken != f2.KubeletToken {
		t.Fatalf("tokens changed between runs: %q %q", f1.AdminToken, f2.AdminToken)
	}
	caDER, _ := readPEM(f1.CACert)
	ca, _ := x509.ParseCertificate(caDER)
	der, _ := readPEM(f1.ServerCert)
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("server cert not signed by CA: %v", err)
	}
	if err := c.VerifyHostname("10.96.0.1"); err != nil {
		t.Errorf("SAN 10.96.0.1: %v", err)
	}
	if err := c.VerifyHostname("kubernetes.default.svc"); err != nil {
		t.Errorf("SAN dns: %v", err)
	}
	// Asking for a new SAN reissues the leaf but keeps the CA.
	o.DNSNames = append(o.DNSNames, "extra.example")
	if _, err := Ensure(o); err != nil {
		t.Fatal(err)
	}
	der2, _ := readPEM(f1.ServerCert)
	c2, _ := x509.ParseCertificate(der2)
	if err := c2.VerifyHostname("extra.example"); err != nil {
		t.Errorf("reissued SAN: %v", err)
	}
	if err := c2.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA changed: %v", err)
	}
	b, _ := os.ReadFile(f1.TokenFile)
	if !strings.Contains(string(b), `"system:masters"`) {
		t.Errorf("token file lacks admin group: %s", b)
	}
}

func TestParseTokens(t *testing.T) {
	content := "abc,admin,1000,\"system:masters\"\ndef,system:node:n,1001,\"system:nodes,x\"\n"
	for _, tc := range []struct{ user, want string }{
		{"admin", "abc"}, {"system:node:n", "def"}, {"nobody", ""},
	} {
		if got := parseTokens(content, tc.user); got != tc.want {
			t.Errorf("parseTokens(%q) = %q, want %q", tc.user, got, tc.want)
		}
	}
}

func TestWriteKubeconfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kc")
	if err := WriteKubeconfig(p, "https://10.88.0.1:6443", "/ca", "tok", "admin"); err != nil {
		t.Fatal(err)
	}
	if err := WriteKubeconfig(p, "", "/ca", "tok", "admin"); err == nil {
		t.Error("empty server accepted")
	}
}
