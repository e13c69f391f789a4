// Package internaltls is the activator's side of Knative's system-internal-tls:
// whether config-network turns it on, the certificate the activator serves on
// its HTTPS port and the trust roots it verifies queue-proxy with, both read
// from the Secret and ConfigMaps upstream's activator reads and replaced when
// they change, and the TLS dial to queue-proxy with upstream's ServerName and
// SAN check.
package internaltls

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Names on the wire and in the cluster, as Knative Serving v0.50.0 and its
// pinned knative.dev/networking define them.
const (
	// ConfigKey in config-network turns system-internal-tls on ("enabled") or off ("disabled", "").
	ConfigKey = "system-internal-tls"
	// LegacyConfigKey is the deprecated boolean that still turns it on when ConfigKey is unset.
	LegacyConfigKey = "internal-encryption"

	// SecretName holds the activator's serving certificate (issued for the SANs
	// kn-routing and data-plane.knative.dev) and, optionally, a CA.
	SecretName = "routing-serving-certs"
	// Keys of SecretName, cert-manager's names.
	CertKey = "tls.crt"
	KeyKey  = "tls.key"
	CAKey   = "ca.crt"

	// TrustBundleLabel marks ConfigMaps of the system namespace whose every value
	// is a PEM bundle of CAs to trust (the label's value does not matter).
	TrustBundleLabel = "networking.knative.dev/trust-bundle"

	// ServerName is what the activator asks queue-proxy for and verifies its
	// certificate against (a SAN of every queue-proxy certificate).
	ServerName = "data-plane.knative.dev"
	// UserSANPrefix + the revision's namespace is the SAN the activator also
	// demands, so a pod of one namespace cannot pose as another's.
	UserSANPrefix = "kn-user-"

	// PodHTTPSPort is queue-proxy's TLS port and the activator's own HTTPS port.
	PodHTTPSPort = 8112
	// ServiceHTTPSPort is the private (and public) Service's https port, mapped to PodHTTPSPort.
	ServiceHTTPSPort = 443
)

// Enabled reports whether config-network's data turns system-internal-tls on,
// with upstream's rules: ConfigKey "enabled" or "disabled" in any case, unset
// falling back to LegacyConfigKey (a strconv.ParseBool value). An invalid value
// is an error naming the key and the value.
func Enabled(data map[string]string) (bool, error) {
	legacy := false
	if v, ok := data[LegacyConfigKey]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("config-network %s: invalid value %q: want a boolean", LegacyConfigKey, v)
		}
		legacy = b
	}
	switch v := data[ConfigKey]; strings.ToLower(v) {
	case "", "disabled":
		return legacy, nil
	case "enabled":
		return true, nil
	default:
		return false, fmt.Errorf("config-network %s: invalid value %q: want %q or %q", ConfigKey, v, "enabled", "disabled")
	}
}

// UserSAN is the SAN a queue-proxy of namespace ns presents.
func UserSAN(ns string) string { return UserSANPrefix + strings.ToLower(ns) }

// Ports maps the plain-text destinations the endpoints give the throttler to
// their TLS ports: a pod's queue-proxy port (8012, 8013) to Pod, a private
// Service's port (80, 81) to ClusterIP, as upstream's activator does.
type Ports struct {
	Pod, ClusterIP int
}

// DefaultPorts are upstream's: 8112 on pods, 443 on Services.
var DefaultPorts = Ports{Pod: PodHTTPSPort, ClusterIP: ServiceHTTPSPort}

// Secure returns dest ("ip:port") with its port replaced by the TLS one. The
// throttler does not say whether a destination is a pod or the private
// Service's cluster IP; the port does: the private Service exposes 80 and 81,
// pods are reached on queue-proxy's ports, never on those.
func (p Ports) Secure(dest string) string {
	host, port, err := net.SplitHostPort(dest)
	if err != nil {
		host, port = dest, ""
	}
	tlsPort := p.Pod
	if port == "80" || port == "81" {
		tlsPort = p.ClusterIP
	}
	return net.JoinHostPort(host, strconv.Itoa(tlsPort))
}
