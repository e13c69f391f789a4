package revisions

import (
	"fmt"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// Request headers set by the ingress for every split (wire contract with the route reconciler).
const (
	RevisionHeader  = "Knative-Serving-Revision"
	NamespaceHeader = "Knative-Serving-Namespace"
)

// ErrNoRevision is returned when neither the headers nor the Host name a revision. It wraps ErrNotFound,
// so callers answer it like an unknown revision (404).
var ErrNoRevision = fmt.Errorf("%w: request names no revision", ErrNotFound)

// FromRequest finds the revision a request is for: the revision headers when both are set, else a Host of
// the form <rev>.<ns>, <rev>.<ns>.svc or <rev>.<ns>.svc.<clusterDomain>, with an optional port.
func FromRequest(r *http.Request, clusterDomain string) (types.NamespacedName, error) {
	name, ns := r.Header.Get(RevisionHeader), r.Header.Get(NamespaceHeader)
	if name != "" && ns != "" {
		return types.NamespacedName{Namespace: ns, Name: name}, nil
	}
	if id, ok := fromHost(r.Host, clusterDomain); ok {
		return id, nil
	}
	return types.NamespacedName{}, fmt.Errorf("%w (host %q)", ErrNoRevision, r.Host)
}

func fromHost(host, clusterDomain string) (types.NamespacedName, bool) {
	// Names never contain ':' so the last one, if any, starts the port.
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	name, rest, ok := strings.Cut(host, ".")
	if !ok || name == "" {
		return types.NamespacedName{}, false
	}
	ns, rest, _ := strings.Cut(rest, ".")
	if ns == "" {
		return types.NamespacedName{}, false
	}
	switch {
	case rest == "", strings.EqualFold(rest, "svc"):
	case len(rest) > 4 && strings.EqualFold(rest[:4], "svc.") && strings.EqualFold(rest[4:], clusterDomain):
	default:
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}
