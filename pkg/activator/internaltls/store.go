package internaltls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

// Store holds the activator's serving certificate and the pool of CAs it
// trusts, both rebuilt as the Secret and the trust-bundle ConfigMaps change
// (Set*/Delete*, called by Watch). Readers (TLS handshakes) take atomic loads
// and never wait for an update. Bad input never replaces good: a Secret whose
// key pair does not parse keeps the last good certificate, with one log line.
type Store struct {
	namespace string
	logger    *zap.SugaredLogger

	// mu serialises updates; readers use the atomics.
	mu       sync.Mutex
	secretCA *x509.Certificate
	bundles  map[string]map[string]string // trust-bundle ConfigMap name → data

	cert  atomic.Pointer[tls.Certificate]
	roots atomic.Pointer[x509.CertPool]
}

// NewStore returns an empty Store for the Secret and ConfigMaps of namespace
// (the system namespace). Until a Secret arrives, handshakes are refused and
// no queue-proxy is trusted.
func NewStore(namespace string, logger *zap.SugaredLogger) *Store {
	s := &Store{namespace: namespace, logger: logger, bundles: map[string]map[string]string{}}
	s.roots.Store(x509.NewCertPool())
	return s
}

// ErrNoCertificate is GetCertificate's error while no valid certificate was
// ever read from the Secret.
var ErrNoCertificate = errors.New("no serving certificate")

// GetCertificate is the HTTPS server's tls.Config.GetCertificate: the current
// certificate, whatever the client's SNI (as upstream).
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%w: secret %s/%s is missing or has no valid %s and %s", ErrNoCertificate, s.namespace, SecretName, CertKey, KeyKey)
}

// Roots returns the CAs queue-proxy certificates are verified against: the
// Secret's ca.crt and every trust bundle. Never nil, never the system roots.
func (s *Store) Roots() *x509.CertPool { return s.roots.Load() }

// SetSecret applies the Secret's content: a new key pair replaces the
// certificate served, a new ca.crt the CA trusted. A Secret whose key pair
// does not parse is ignored whole, and a ca.crt that does not parse is
// ignored, each with one log line, keeping the last good ones; an absent
// ca.crt removes the CA, as upstream.
func (s *Store) SetSecret(sec *corev1.Secret) {
	if sec == nil || sec.Namespace != s.namespace || sec.Name != SecretName {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := sec.Namespace + "/" + sec.Name

	cert, err := keyPair(sec.Data)
	if err != nil {
		// The whole Secret is suspect (half written, or edited by hand): its
		// ca.crt is not applied either.
		if s.cert.Load() != nil {
			s.logger.Errorw("Ignoring secret "+name+"; serving the last good certificate and trusting the last good CA", zap.Error(err))
		} else {
			s.logger.Errorw("No valid certificate in secret "+name+"; HTTPS handshakes are refused until it has one", zap.Error(err))
		}
		return
	}
	if old := s.cert.Load(); old == nil || !sameChain(old, cert) {
		s.cert.Store(cert)
		s.logger.Infow("Serving the certificate of secret "+name,
			"serial", cert.Leaf.SerialNumber.String(), "notAfter", cert.Leaf.NotAfter, "dnsNames", cert.Leaf.DNSNames)
	}

	caPEM := sec.Data[CAKey]
	switch {
	case len(caPEM) == 0:
		if s.secretCA != nil {
			s.secretCA = nil
			s.rebuildLocked()
		}
	default:
		ca, err := firstCert(caPEM)
		if err != nil {
			s.logger.Errorw("Ignoring invalid "+CAKey+" of secret "+name+"; keeping the last good CA", zap.Error(err))
			return
		}
		if s.secretCA == nil || !s.secretCA.Equal(ca) {
			s.secretCA = ca
			s.rebuildLocked()
		}
	}
}

// DeleteSecret keeps the certificate and CA last read: an activator that
// served TLS keeps serving it until a new Secret arrives (upstream's cache
// ignores deletions too).
func (s *Store) DeleteSecret(name string) {
	if name == SecretName {
		s.logger.Warnf("Secret %s/%s was deleted; serving the last certificate read until it is back", s.namespace, SecretName)
	}
}

// SetBundle applies a trust-bundle ConfigMap (labelled TrustBundleLabel):
// every value's certificates are trusted. A value without any certificate is
// logged and skipped.
func (s *Store) SetBundle(cm *corev1.ConfigMap) {
	if cm == nil || cm.Namespace != s.namespace {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.bundles[cm.Name]; ok && equalData(old, cm.Data) {
		return
	}
	data := make(map[string]string, len(cm.Data))
	for k, v := range cm.Data {
		data[k] = v
	}
	s.bundles[cm.Name] = data
	s.rebuildLocked()
}

// DeleteBundle forgets a trust-bundle ConfigMap (deleted, or its label removed).
func (s *Store) DeleteBundle(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.bundles[name]; !ok {
		return
	}
	delete(s.bundles, name)
	s.rebuildLocked()
}

// rebuildLocked publishes a fresh pool: a pool in use by a handshake is never
// changed under it.
func (s *Store) rebuildLocked() {
	pool := x509.NewCertPool()
	n := 0
	if s.secretCA != nil {
		pool.AddCert(s.secretCA)
		n++
	}
	names := make([]string, 0, len(s.bundles))
	for name := range s.bundles {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		keys := make([]string, 0, len(s.bundles[name]))
		for k := range s.bundles[name] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if pool.AppendCertsFromPEM([]byte(s.bundles[name][k])) {
				n++
			} else {
				s.logger.Errorf("Ignoring trust bundle %s/%s key %q: no PEM certificate in it", s.namespace, name, k)
			}
		}
	}
	s.roots.Store(pool)
	if n == 0 {
		s.logger.Warnf("No CA to verify queue-proxy with: neither %s in secret %s/%s nor a ConfigMap labelled %s; TLS requests to pods fail",
			CAKey, s.namespace, SecretName, TrustBundleLabel)
		return
	}
	s.logger.Infof("Trusting %d CA source(s) for queue-proxy", n)
}

// keyPair parses the Secret's key pair, naming what is missing.
func keyPair(data map[string][]byte) (*tls.Certificate, error) {
	var missing []string
	for _, k := range []string{CertKey, KeyKey} {
		if len(data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing keys %v", missing)
	}
	cert, err := tls.X509KeyPair(data[CertKey], data[KeyKey])
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", CertKey, KeyKey, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", CertKey, err)
		}
	}
	return &cert, nil
}

// firstCert parses the first PEM block of ca.crt, the one CA upstream takes from it.
func firstCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block is %q, want CERTIFICATE", block.Type)
	}
	return x509.ParseCertificate(block.Bytes)
}

func sameChain(a, b *tls.Certificate) bool {
	if len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if !bytes.Equal(a.Certificate[i], b.Certificate[i]) {
			return false
		}
	}
	return true
}

func equalData(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
