// Package pki makes the lab's certificates, service-account keys, static tokens and kubeconfigs with
// crypto/x509 alone, so the lab needs no openssl.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files are the paths of everything Ensure writes.
type Files struct {
	Dir          string
	CACert       string
	CAKey        string
	ServerCert   string // apiserver serving cert
	ServerKey    string
	KubeletCert  string // kubelet serving cert (apiserver → kubelet for logs/exec)
	KubeletKey   string
	ClientCert   string // apiserver → kubelet client cert
	ClientKey    string
	SAKey        string // service-account signing key (private)
	SAPub        string
	TokenFile    string // static token auth file
	AdminToken   string // the admin bearer token (also written into TokenFile)
	KubeletToken string
	CMToken      string // controller-manager
	SchedToken   string
	ProxyToken   string
}

// Options name what goes into the certificates.
type Options struct {
	Dir      string
	NodeName string
	IPs      []net.IP // apiserver serving IPs (bridge IP, service IP, loopback)
	DNSNames []string
}

// Ensure creates the PKI in o.Dir, reusing whatever is already there and still valid (so `up` twice keeps
// existing kubeconfigs and pods' tokens working).
func Ensure(o Options) (*Files, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	f := &Files{
		Dir:         o.Dir,
		CACert:      filepath.Join(o.Dir, "ca.crt"),
		CAKey:       filepath.Join(o.Dir, "ca.key"),
		ServerCert:  filepath.Join(o.Dir, "apiserver.crt"),
		ServerKey:   filepath.Join(o.Dir, "apiserver.key"),
		KubeletCert: filepath.Join(o.Dir, "kubelet.crt"),
		KubeletKey:  filepath.Join(o.Dir, "kubelet.key"),
		ClientCert:  filepath.Join(o.Dir, "apiserver-kubelet-client.crt"),
		ClientKey:   filepath.Join(o.Dir, "apiserver-kubelet-client.key"),
		SAKey:       filepath.Join(o.Dir, "sa.key"),
		SAPub:       filepath.Join(o.Dir, "sa.pub"),
		TokenFile:   filepath.Join(o.Dir, "tokens.csv"),
	}
	ca, caKey, err := loadOrMakeCA(f.CACert, f.CAKey)
	if err != nil {
		return nil, err
	}
	if err := ensureLeaf(f.ServerCert, f.ServerKey, ca, caKey, pkix.Name{CommonName: "kube-apiserver"},
		o.IPs, o.DNSNames, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}); err != nil {
		return nil, err
	}
	if err := ensureLeaf(f.KubeletCert, f.KubeletKey, ca, caKey, pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}},
		o.IPs, []string{o.NodeName, "localhost"}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}); err != nil {
		return nil, err
	}
	if err := ensureLeaf(f.ClientCert, f.ClientKey, ca, caKey, pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		nil, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}); err != nil {
		return nil, err
	}
	if err := ensureSAKey(f.SAKey, f.SAPub); err != nil {
		return nil, err
	}
	if err := ensureTokens(f, o.NodeName); err != nil {
		return nil, err
	}
	return f, nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func readPEM(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return blk.Bytes, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func loadOrMakeCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if cder, err := readPEM(certPath); err == nil {
		if kder, err := readPEM(keyPath); err == nil {
			c, err1 := x509.ParseCertificate(cder)
			k, err2 := x509.ParseECPrivateKey(kder)
			if err1 == nil && err2 == nil && time.Now().Before(c.NotAfter.Add(-24*time.Hour)) {
				return c, k, nil
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "thaw-lab-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(keyPath, "EC PRIVATE KEY", kder, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	// A new CA invalidates every leaf signed by an old one.
	for _, p := range []string{"apiserver", "kubelet", "apiserver-kubelet-client"} {
		_ = os.Remove(filepath.Join(filepath.Dir(certPath), p+".crt"))
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// leafValid tells whether an existing leaf is signed by ca, unexpired and carries the wanted SANs.
func leafValid(certPath, keyPath string, ca *x509.Certificate, ips []net.IP, dns []string) bool {
	cder, err := readPEM(certPath)
	if err != nil {
		return false
	}
	if _, err := readPEM(keyPath); err != nil {
		return false
	}
	c, err := x509.ParseCertificate(cder)
	if err != nil || c.CheckSignatureFrom(ca) != nil || time.Now().After(c.NotAfter.Add(-24*time.Hour)) {
		return false
	}
	for _, ip := range ips {
		found := false
		for _, have := range c.IPAddresses {
			found = found || have.Equal(ip)
		}
		if !found {
			return false
		}
	}
	for _, d := range dns {
		found := false
		for _, have := range c.DNSNames {
			found = found || have == d
		}
		if !found {
			return false
		}
	}
	return true
}

func ensureLeaf(certPath, keyPath string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, subj pkix.Name,
	ips []net.IP, dns []string, usage []x509.ExtKeyUsage) error {
	if leafValid(certPath, keyPath, ca, ips, dns) {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      subj,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(keyPath, "EC PRIVATE KEY", kder, 0o600); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func ensureSAKey(keyPath, pubPath string) error {
	if _, err := os.Stat(keyPath); err == nil {
		if _, err := os.Stat(pubPath); err == nil {
			return nil
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writePEM(keyPath, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	return writePEM(pubPath, "PUBLIC KEY", pub, 0o644)
}

func token() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ensureTokens writes the static token file: token,user,uid,"group1,group2".
func ensureTokens(f *Files, node string) error {
	type entry struct {
		tok    *string
		user   string
		groups string
	}
	entries := []entry{
		{&f.AdminToken, "admin", "system:masters"},
		{&f.KubeletToken, "system:node:" + node, "system:nodes"},
		{&f.CMToken, "system:kube-controller-manager", ""},
		{&f.SchedToken, "system:kube-scheduler", ""},
		{&f.ProxyToken, "system:kube-proxy", ""},
	}
	if b, err := os.ReadFile(f.TokenFile); err == nil {
		if parseTokens(string(b), entries[0].user) != "" {
			for _, e := range entries {
				*e.tok = parseTokens(string(b), e.user)
			}
			if allSet(f) {
				return nil
			}
		}
	}
	var out []byte
	for i, e := range entries {
		*e.tok = token()
		out = fmt.Appendf(out, "%s,%s,%d,\"%s\"\n", *e.tok, e.user, 1000+i, e.groups)
	}
	return os.WriteFile(f.TokenFile, out, 0o600)
}

func allSet(f *Files) bool {
	return f.AdminToken != "" && f.KubeletToken != "" && f.CMToken != "" && f.SchedToken != "" && f.ProxyToken != ""
}

// parseTokens returns the token of user in a token file, or "".
func parseTokens(content, user string) string {
	for _, line := range splitLines(content) {
		var fields []string
		cur := ""
		inQ := false
		for _, r := range line {
			switch {
			case r == '"':
				inQ = !inQ
			case r == ',' && !inQ:
				fields = append(fields, cur)
				cur = ""
			default:
				cur += string(r)
			}
		}
		fields = append(fields, cur)
		if len(fields) >= 2 && fields[1] == user {
			return fields[0]
		}
	}
	return ""
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// WriteKubeconfig writes a token kubeconfig for server.
func WriteKubeconfig(path, server, caFile, tok, user string) error {
	if server == "" || tok == "" {
		return errors.New("kubeconfig: server and token required")
	}
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: thaw-lab
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: thaw-lab
  context:
    cluster: thaw-lab
    user: %s
current-context: thaw-lab
`, server, caFile, user, tok, user)
	return os.WriteFile(path, []byte(content), 0o600)
}
