package kingress

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// Rule is one translated IngressRule: the hosts it answers and its paths in
// precedence order.
type Rule struct {
	Ingress    types.NamespacedName
	Hosts      []string
	Visibility v1alpha1.IngressVisibility
	Paths      []Path
}

// Path is one translated HTTPIngressPath.
type Path struct {
	// Prefix is a literal prefix of the URL path; "" matches everything.
	Prefix string
	// Headers must all match exactly (canonical keys) for the path to apply.
	Headers map[string]string
	// RewriteHost, when set, replaces the Host sent upstream.
	RewriteHost string
	// AppendHeaders are set on the request after the split's own headers.
	AppendHeaders map[string]string
	Splits        []Split
	// total is the sum of split weights; picks draw from [0,total).
	total int
}

// Split is one weighted backend of a Path.
type Split struct {
	Namespace     string
	Name          string
	Port          intstr.IntOrString
	Weight        int
	AppendHeaders map[string]string
}

// Backend names the Service a split targets.
func (s *Split) Backend() types.NamespacedName {
	return types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
}

// pick chooses a split by weight; intn must return a value in [0,n).
func (p *Path) pick(intn func(int) int) *Split {
	if len(p.Splits) == 1 {
		return &p.Splits[0]
	}
	r := intn(p.total)
	for i := range p.Splits {
		if r < p.Splits[i].Weight {
			return &p.Splits[i]
		}
		r -= p.Splits[i].Weight
	}
	// Unreachable when intn honours its contract; the last split is a safe answer.
	return &p.Splits[len(p.Splits)-1]
}

// matches reports whether req falls under this path.
func (p *Path) matches(req *http.Request) bool {
	if !strings.HasPrefix(req.URL.Path, p.Prefix) {
		return false
	}
	for k, v := range p.Headers {
		if req.Header.Get(k) != v {
			return false
		}
	}
	return true
}

// Table is an immutable host → rules index. The proxy swaps whole tables
// atomically so a request never sees half an update.
type Table struct {
	hosts map[string][]*Rule
}

// NewTable indexes rules by host. Earlier rules take precedence for a host
// they share with later ones.
func NewTable(rules []Rule) *Table {
	t := &Table{hosts: make(map[string][]*Rule)}
	for i := range rules {
		r := &rules[i]
		for _, h := range r.Hosts {
			t.hosts[h] = append(t.hosts[h], r)
		}
	}
	return t
}

// Hosts returns the number of distinct hosts routed.
func (t *Table) Hosts() int { return len(t.hosts) }

// Match finds the first path of the first rule for host that matches req.
func (t *Table) Match(host string, req *http.Request) *Path {
	for _, r := range t.hosts[host] {
		for i := range r.Paths {
			if r.Paths[i].matches(req) {
				return &r.Paths[i]
			}
		}
	}
	return nil
}

// normalizeHost lower-cases a Host header value and drops its port and a
// trailing dot, so that "Foo.Example.com.:80" matches rule host "foo.example.com".
func normalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(h, ".")
	return strings.ToLower(h)
}

// ErrInvalidIngress wraps every reason Translate rejects an Ingress.
var ErrInvalidIngress = errors.New("invalid ingress")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidIngress, fmt.Sprintf(format, args...))
}

// Translate turns an Ingress spec into rules. Specs the webhook would reject
// (no rules, no hosts, no splits, bad percentages) yield an error wrapping
// ErrInvalidIngress, so a bad object is reported on its status instead of
// half-routed.
func Translate(ing *v1alpha1.Ingress) ([]Rule, error) {
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	if len(ing.Spec.Rules) == 0 {
		return nil, invalid("spec.rules is empty")
	}
	rules := make([]Rule, 0, len(ing.Spec.Rules))
	for ri, in := range ing.Spec.Rules {
		where := fmt.Sprintf("spec.rules[%d]", ri)
		if len(in.Hosts) == 0 {
			return nil, invalid("%s.hosts is empty", where)
		}
		if in.HTTP == nil || len(in.HTTP.Paths) == 0 {
			return nil, invalid("%s.http.paths is empty", where)
		}
		r := Rule{Ingress: key, Visibility: in.Visibility}
		if r.Visibility == "" {
			r.Visibility = v1alpha1.IngressVisibilityExternalIP
		}
		for hi, h := range in.Hosts {
			nh := normalizeHost(h)
			if nh == "" {
				return nil, invalid("%s.hosts[%d] is empty", where, hi)
			}
			r.Hosts = append(r.Hosts, nh)
		}
		for pi := range in.HTTP.Paths {
			p, err := translatePath(&in.HTTP.Paths[pi], fmt.Sprintf("%s.http.paths[%d]", where, pi))
			if err != nil {
				return nil, err
			}
			r.Paths = append(r.Paths, p)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func translatePath(in *v1alpha1.HTTPIngressPath, where string) (Path, error) {
	if in.Path != "" && !strings.HasPrefix(in.Path, "/") {
		return Path{}, invalid("%s.path %q does not start with /", where, in.Path)
	}
	if len(in.Splits) == 0 {
		return Path{}, invalid("%s.splits is empty", where)
	}
	p := Path{
		Prefix:        in.Path,
		RewriteHost:   in.RewriteHost,
		AppendHeaders: canonicalHeaders(in.AppendHeaders),
	}
	if len(in.Headers) > 0 {
		p.Headers = make(map[string]string, len(in.Headers))
		for k, m := range in.Headers {
			p.Headers[http.CanonicalHeaderKey(k)] = m.Exact
		}
	}
	for si, s := range in.Splits {
		sw := fmt.Sprintf("%s.splits[%d]", where, si)
		if s.ServiceName == "" || s.ServiceNamespace == "" {
			return Path{}, invalid("%s needs serviceName and serviceNamespace", sw)
		}
		if s.Percent < 0 || s.Percent > 100 {
			return Path{}, invalid("%s.percent %d is outside [0,100]", sw, s.Percent)
		}
		if s.ServicePort.Type == intstr.Int && (s.ServicePort.IntVal <= 0 || s.ServicePort.IntVal > 65535) ||
			s.ServicePort.Type == intstr.String && s.ServicePort.StrVal == "" {
			return Path{}, invalid("%s.servicePort %q is not a port", sw, s.ServicePort.String())
		}
		w := s.Percent
		// The webhook defaults a lone split to 100%; do the same for objects
		// that skipped it.
		if len(in.Splits) == 1 && w == 0 {
			w = 100
		}
		p.Splits = append(p.Splits, Split{
			Namespace:     s.ServiceNamespace,
			Name:          s.ServiceName,
			Port:          s.ServicePort,
			Weight:        w,
			AppendHeaders: canonicalHeaders(s.AppendHeaders),
		})
		p.total += w
	}
	if p.total == 0 {
		return Path{}, invalid("%s: split percentages sum to 0", where)
	}
	// Weights are relative, so a sum other than 100 still routes; drop
	// zero-weight splits so pick never lands on them.
	kept := p.Splits[:0]
	for _, s := range p.Splits {
		if s.Weight > 0 {
			kept = append(kept, s)
		}
	}
	p.Splits = kept
	return p, nil
}

func canonicalHeaders(in map[string]string) map[string]string {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[http.CanonicalHeaderKey(k)] = v
	}
	return out
}

// sortedKeys returns map keys in a stable order so that overlapping hosts of
// different Ingresses resolve the same way on every rebuild.
func sortedKeys[V any](m map[types.NamespacedName]V) []types.NamespacedName {
	keys := make([]types.NamespacedName, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Namespace != keys[j].Namespace {
			return keys[i].Namespace < keys[j].Namespace
		}
		return keys[i].Name < keys[j].Name
	})
	return keys
}
