package faultinject

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzParse: any key and value parse without panicking; a fault in the set has sane fields, and
// every error line names the key it is about.
func FuzzParse(f *testing.F) {
	f.Add("activator.pod-error", "status=500 p=0.5 until=2026-12-03T16:30:00Z")
	f.Add("activator.poke-delay", "delay=2s,p=1")
	f.Add("autoscaler.decision-freeze", "")
	f.Add("until", "2026-12-03T16:30:00Z")
	f.Add("activator.pod-error", "status=reset p=NaN")
	f.Fuzz(func(t *testing.T, key, value string) {
		if len(validation.IsConfigMapKey(key)) > 0 {
			return // the API server admits no such key
		}
		for _, c := range []Component{Activator, Autoscaler} {
			set, err := Parse(c, map[string]string{key: value})
			for fault, s := range set {
				if fault.Component() != c || !(s.Probability >= 0 && s.Probability <= 1) || s.Delay < 0 || s.Delay > MaxDelay {
					t.Fatalf("%q=%q gave %s %+v", key, value, fault, s)
				}
				if fault == PodError && !s.Reset && (s.Status < 200 || s.Status > 599) {
					t.Fatalf("%q=%q gave status %d", key, value, s.Status)
				}
			}
			if err != nil {
				for _, l := range strings.Split(err.Error(), "\n") {
					if !strings.HasPrefix(l, key+":") {
						t.Fatalf("error line %q does not name %q", l, key)
					}
				}
			}
		}
	})
}
