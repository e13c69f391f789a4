// Package faultinject breaks Thaw's activator and autoscaler on purpose, from inside, so chaos
// experiments work on any cluster without node access: delayed or lost pokes and stats, latency and
// errors on the activator → pod hop, stalled pod probes, frozen decisions, slow /scale writes and
// stats dropped on arrival.
//
// It is off unless the Deployment sets THAW_FAULT_INJECTION=enabled: a ConfigMap alone can never turn
// it on, because without the switch the binaries build no Injector, wrap nothing and do not watch the
// ConfigMap. With the switch, the ConfigMap thaw-fault-injection in the system namespace selects the
// faults, one key per fault, each with a probability, a delay or status where it applies, and an
// optional expiry so a forgotten fault ends by itself.
//
// The package knows no component's types: its wrappers are over interfaces shaped like the seams they
// wrap (http.RoundTripper, the stat sink, the /scale client, the deciders), so the activator does not
// link the autoscaler's code nor the reverse.
package faultinject

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvVar is the deploy-time switch; only the value EnvEnabled turns fault injection on.
const (
	EnvVar     = "THAW_FAULT_INJECTION"
	EnvEnabled = "enabled"
)

// ConfigMapName is the ConfigMap, in the system namespace, that selects the faults.
const ConfigMapName = "thaw-fault-injection"

// MaxDelay bounds every injected delay, so a typo cannot park requests or writes for hours.
const MaxDelay = 10 * time.Minute

// Enabled reads the switch. Unset or "disabled" is off without error; any other value than
// "enabled" is off with an error naming the variable, so a typo is visible in the log, never silent
// and never on.
func Enabled(getenv func(string) string) (bool, error) {
	switch v := getenv(EnvVar); v {
	case EnvEnabled:
		return true, nil
	case "", "disabled":
		return false, nil
	default:
		return false, fmt.Errorf("%s=%q: want %q or %q; fault injection stays off", EnvVar, v, EnvEnabled, "disabled")
	}
}

// Component is the process a fault belongs to.
type Component string

// The two components.
const (
	Activator  Component = "activator"
	Autoscaler Component = "autoscaler"
)

// Fault names a fault; it is also the ConfigMap key, "<component>.<name>".
type Fault string

// Faults. Each is one ConfigMap key whose value lists its fields (see Spec).
const (
	// PokeDelay sends the activator's first-request pokes to the autoscaler after delay.
	PokeDelay Fault = "activator.poke-delay"
	// PokeDrop loses pokes (the next periodic stat still tells the autoscaler).
	PokeDrop Fault = "activator.poke-drop"
	// StatsDelay sends the activator's periodic stat batches after delay.
	StatsDelay Fault = "activator.stats-delay"
	// StatsDrop loses periodic stat batches.
	StatsDrop Fault = "activator.stats-drop"
	// PodLatency holds each request on the activator → pod hop for delay before it is sent.
	PodLatency Fault = "activator.pod-latency"
	// PodError answers a request on the activator → pod hop with status without reaching the pod, or
	// fails it as a reset connection (the activator then answers 502).
	PodError Fault = "activator.pod-error"
	// ProbeStall holds the activator's readiness probes of new pods for delay; at or past the probe
	// timeout the probe fails.
	ProbeStall Fault = "activator.probe-stall"
	// DecisionFreeze makes the autoscaler act on each revision's last decision from before the freeze
	// (desired scale, excess burst capacity, panic) while the deciders keep computing.
	DecisionFreeze Fault = "autoscaler.decision-freeze"
	// ScaleWriteDelay holds each /scale patch for delay.
	ScaleWriteDelay Fault = "autoscaler.scale-write-delay"
	// StatDrop drops stats arriving from the activators before they are recorded or forwarded.
	StatDrop Fault = "autoscaler.stat-drop"
)

// UntilKey is the ConfigMap key whose time ends every fault that has no until of its own.
const UntilKey = "until"

// field names in a fault's value.
const (
	fieldP      = "p"
	fieldDelay  = "delay"
	fieldStatus = "status"
	fieldUntil  = "until"
)

// kind says which fields a fault takes and which it needs.
type kind struct {
	allowed  []string
	required []string
}

var kinds = map[Fault]kind{
	PokeDelay:       {allowed: []string{fieldP, fieldDelay, fieldUntil}, required: []string{fieldDelay}},
	PokeDrop:        {allowed: []string{fieldP, fieldUntil}},
	StatsDelay:      {allowed: []string{fieldP, fieldDelay, fieldUntil}, required: []string{fieldDelay}},
	StatsDrop:       {allowed: []string{fieldP, fieldUntil}},
	PodLatency:      {allowed: []string{fieldP, fieldDelay, fieldUntil}, required: []string{fieldDelay}},
	PodError:        {allowed: []string{fieldP, fieldStatus, fieldUntil}, required: []string{fieldStatus}},
	ProbeStall:      {allowed: []string{fieldP, fieldDelay, fieldUntil}, required: []string{fieldDelay}},
	DecisionFreeze:  {allowed: []string{fieldUntil}},
	ScaleWriteDelay: {allowed: []string{fieldP, fieldDelay, fieldUntil}, required: []string{fieldDelay}},
	StatDrop:        {allowed: []string{fieldP, fieldUntil}},
}

// Component is the component a fault belongs to.
func (f Fault) Component() Component {
	c, _, _ := strings.Cut(string(f), ".")
	return Component(c)
}

// Name is the fault without its component, as the metric's fault label.
func (f Fault) Name() string {
	_, n, _ := strings.Cut(string(f), ".")
	return n
}

// Faults lists the known faults of c, sorted.
func Faults(c Component) []Fault {
	var out []Fault
	for f := range kinds {
		if f.Component() == c {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Spec is one fault's parameters.
type Spec struct {
	// Probability of injecting at each opportunity (a request, a poke, a batch, a write), 0 to 1;
	// default 1.
	Probability float64
	// Delay for the delay, latency and stall faults.
	Delay time.Duration
	// Status is PodError's HTTP status; 0 when Reset.
	Status int
	// Reset makes PodError fail the hop as a reset connection.
	Reset bool
	// Until ends the fault; zero never.
	Until time.Time
}

// Set is the faults in force for one component.
type Set map[Fault]Spec

// Parse reads the ConfigMap's data for component c. Keys of the other component are left to it.
// Every invalid key is one error naming the key, and its fault is left out of the set; the valid
// faults are returned with them.
func Parse(c Component, data map[string]string) (Set, error) {
	set := Set{}
	var errs []error
	var globalUntil time.Time
	if v, ok := data[UntilKey]; ok {
		t, err := parseUntil(v)
		if err != nil {
			// Without its bound no fault may run: a fault meant to end must not run forever.
			return Set{}, fmt.Errorf("%s: %w; no fault applied", UntilKey, err)
		}
		globalUntil = t
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == UntilKey {
			continue
		}
		f := Fault(k)
		if _, ok := kinds[f]; !ok {
			if fc := f.Component(); fc == Activator || fc == Autoscaler {
				if fc != c {
					continue
				}
			}
			errs = append(errs, fmt.Errorf("%s: unknown key (known: %s, %s)", k, UntilKey, knownKeys()))
			continue
		}
		if f.Component() != c {
			continue
		}
		s, err := parseSpec(f, data[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		if s.Until.IsZero() {
			s.Until = globalUntil
		}
		set[f] = s
	}
	return set, errors.Join(errs...)
}

func knownKeys() string {
	ks := make([]string, 0, len(kinds))
	for f := range kinds {
		ks = append(ks, string(f))
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// parseSpec reads "p=0.5 delay=2s status=500 until=2026-01-02T15:04:05Z" (fields separated by spaces
// or commas, each at most once).
func parseSpec(f Fault, v string) (Spec, error) {
	k := kinds[f]
	s := Spec{Probability: 1}
	seen := map[string]bool{}
	for _, fld := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' }) {
		name, val, ok := strings.Cut(fld, "=")
		if !ok {
			return Spec{}, fmt.Errorf("%q is not field=value (fields: %s)", fld, strings.Join(k.allowed, ", "))
		}
		if !contains(k.allowed, name) {
			return Spec{}, fmt.Errorf("unknown field %q (fields: %s)", name, strings.Join(k.allowed, ", "))
		}
		if seen[name] {
			return Spec{}, fmt.Errorf("field %q given twice", name)
		}
		seen[name] = true
		switch name {
		case fieldP:
			p, err := strconv.ParseFloat(val, 64)
			if err != nil || p < 0 || p > 1 || p != p {
				return Spec{}, fmt.Errorf("p=%q: want a probability from 0 to 1", val)
			}
			s.Probability = p
		case fieldDelay:
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 || d > MaxDelay {
				return Spec{}, fmt.Errorf("delay=%q: want a duration above 0 and at most %v, like 500ms", val, MaxDelay)
			}
			s.Delay = d
		case fieldStatus:
			if val == "reset" {
				s.Reset = true
				break
			}
			n, err := strconv.Atoi(val)
			if err != nil || n < 200 || n > 599 {
				return Spec{}, fmt.Errorf("status=%q: want an HTTP status from 200 to 599, or reset", val)
			}
			s.Status = n
		case fieldUntil:
			t, err := parseUntil(val)
			if err != nil {
				return Spec{}, err
			}
			s.Until = t
		}
	}
	for _, r := range k.required {
		if !seen[r] {
			return Spec{}, fmt.Errorf("field %q is required", r)
		}
	}
	return s, nil
}

func parseUntil(v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
	if err != nil {
		return time.Time{}, fmt.Errorf("until=%q: want an RFC 3339 time like 2026-01-02T15:04:05Z", v)
	}
	return t, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
