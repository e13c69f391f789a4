package faultinject

import (
	"strings"
	"testing"
	"time"
)

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		val     string
		on, err bool
	}{
		{val: "", on: false},
		{val: "disabled", on: false},
		{val: "enabled", on: true},
		{val: "true", on: false, err: true},
		{val: "Enabled", on: false, err: true},
		{val: "1", on: false, err: true},
	} {
		t.Run(tc.val, func(t *testing.T) {
			on, err := Enabled(func(k string) string {
				if k == EnvVar {
					return tc.val
				}
				return ""
			})
			if on != tc.on || (err != nil) != tc.err {
				t.Fatalf("Enabled(%q) = %v, %v; want %v, error %v", tc.val, on, err, tc.on, tc.err)
			}
			if err != nil && !strings.Contains(err.Error(), EnvVar) {
				t.Errorf("error %q does not name %s", err, EnvVar)
			}
		})
	}
}

func TestParse(t *testing.T) {
	until := time.Date(2026, 12, 3, 16, 30, 0, 0, time.UTC)
	later := until.Add(time.Hour)
	for _, tc := range []struct {
		name    string
		c       Component
		data    map[string]string
		want    Set
		errKeys []string // each error must name these keys
	}{
		{name: "empty", c: Activator, data: nil, want: Set{}},
		{name: "pod error with probability and expiry", c: Activator,
			data: map[string]string{"activator.pod-error": "p=0.5 status=500 until=2026-12-03T16:30:00Z"},
			want: Set{PodError: {Probability: 0.5, Status: 500, Until: until}}},
		{name: "reset, commas", c: Activator,
			data: map[string]string{"activator.pod-error": "status=reset,p=0.25"},
			want: Set{PodError: {Probability: 0.25, Reset: true}}},
		{name: "every activator delay", c: Activator,
			data: map[string]string{"activator.poke-delay": "delay=2s", "activator.stats-delay": "delay=1500ms",
				"activator.pod-latency": "delay=100ms p=1", "activator.probe-stall": "delay=30s"},
			want: Set{PokeDelay: {Probability: 1, Delay: 2 * time.Second}, StatsDelay: {Probability: 1, Delay: 1500 * time.Millisecond},
				PodLatency: {Probability: 1, Delay: 100 * time.Millisecond}, ProbeStall: {Probability: 1, Delay: 30 * time.Second}}},
		{name: "drops take defaults from an empty value", c: Activator,
			data: map[string]string{"activator.poke-drop": "", "activator.stats-drop": "p=0"},
			want: Set{PokeDrop: {Probability: 1}, StatsDrop: {Probability: 0}}},
		{name: "other component's keys are left to it", c: Activator,
			data: map[string]string{"autoscaler.decision-freeze": "", "autoscaler.stat-drop": "p=bad", "activator.poke-drop": ""},
			want: Set{PokeDrop: {Probability: 1}}},
		{name: "autoscaler faults", c: Autoscaler,
			data: map[string]string{"autoscaler.decision-freeze": "", "autoscaler.scale-write-delay": "delay=3s p=0.5",
				"autoscaler.stat-drop": "p=0.1", "activator.pod-error": "status=500"},
			want: Set{DecisionFreeze: {Probability: 1}, ScaleWriteDelay: {Probability: 0.5, Delay: 3 * time.Second},
				StatDrop: {Probability: 0.1}}},
		{name: "global until bounds faults without their own", c: Autoscaler,
			data: map[string]string{"until": "2026-12-03T16:30:00Z", "autoscaler.decision-freeze": "",
				"autoscaler.stat-drop": "until=2026-12-03T17:30:00Z"},
			want: Set{DecisionFreeze: {Probability: 1, Until: until}, StatDrop: {Probability: 1, Until: later}}},
		{name: "invalid global until applies nothing", c: Autoscaler,
			data: map[string]string{"until": "in 5 minutes", "autoscaler.decision-freeze": ""},
			want: Set{}, errKeys: []string{"until"}},
		{name: "bad values leave only their fault out", c: Activator,
			data: map[string]string{
				"activator.pod-error":   "status=99",
				"activator.pod-latency": "delay=-1s",
				"activator.poke-delay":  "p=2 delay=1s",
				"activator.stats-delay": "delay=11m",
				"activator.probe-stall": "p=0.5",
				"activator.poke-drop":   "p=0.5 p=0.6",
				"activator.stats-drop":  "p=0.5",
			},
			want: Set{StatsDrop: {Probability: 0.5}},
			errKeys: []string{"activator.pod-error", "activator.pod-latency", "activator.poke-delay",
				"activator.stats-delay", "activator.probe-stall", "activator.poke-drop"}},
		{name: "unknown field and malformed field", c: Activator,
			data:    map[string]string{"activator.poke-drop": "delay=1s", "activator.pod-error": "500"},
			want:    Set{},
			errKeys: []string{"activator.poke-drop", "activator.pod-error"}},
		{name: "freeze takes no probability", c: Autoscaler,
			data:    map[string]string{"autoscaler.decision-freeze": "p=0.5"},
			want:    Set{},
			errKeys: []string{"autoscaler.decision-freeze"}},
		{name: "unknown keys are named", c: Activator,
			data:    map[string]string{"activator.pod-errors": "status=500", "pod-error": "status=500"},
			want:    Set{},
			errKeys: []string{"activator.pod-errors", "pod-error"}},
		{name: "bad until", c: Activator,
			data:    map[string]string{"activator.poke-drop": "until=tomorrow"},
			want:    Set{},
			errKeys: []string{"activator.poke-drop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.c, tc.data)
			if len(got) != len(tc.want) {
				t.Fatalf("Parse = %v, want %v", got, tc.want)
			}
			for f, w := range tc.want {
				g, ok := got[f]
				if !ok || g.Probability != w.Probability || g.Delay != w.Delay || g.Status != w.Status ||
					g.Reset != w.Reset || !g.Until.Equal(w.Until) {
					t.Errorf("%s = %+v, want %+v", f, g, w)
				}
			}
			if (err != nil) != (len(tc.errKeys) > 0) {
				t.Fatalf("error = %v, want errors for %v", err, tc.errKeys)
			}
			if err != nil {
				lines := strings.Split(err.Error(), "\n")
				if len(lines) != len(tc.errKeys) {
					t.Errorf("%d errors, want %d: %v", len(lines), len(tc.errKeys), err)
				}
				for _, k := range tc.errKeys {
					found := false
					for _, l := range lines {
						found = found || strings.HasPrefix(l, k+":")
					}
					if !found {
						t.Errorf("no error names %s: %v", k, err)
					}
				}
			}
		})
	}
}

func TestFaultsPerComponent(t *testing.T) {
	if n := len(Faults(Activator)); n != 7 {
		t.Errorf("activator faults: %d, want 7", n)
	}
	if n := len(Faults(Autoscaler)); n != 3 {
		t.Errorf("autoscaler faults: %d, want 3", n)
	}
	for f := range kinds {
		if f.Component() != Activator && f.Component() != Autoscaler || f.Name() == "" {
			t.Errorf("fault %q is not <component>.<name>", f)
		}
	}
}
