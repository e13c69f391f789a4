package asconfig

import (
	"strings"
	"testing"
)

func TestThawKeepAliveKey(t *testing.T) {
	for _, tc := range []struct {
		value   string
		set     bool
		want    KeepAliveMode
		wantErr bool
	}{
		{set: false, want: KeepAliveOff},
		{value: "off", set: true, want: KeepAliveOff},
		{value: "learned", set: true, want: KeepAliveLearned},
		{value: " Hybrid ", set: true, want: KeepAliveHybrid},
		{value: "on", set: true, want: KeepAliveOff, wantErr: true},
		{value: "", set: true, want: KeepAliveOff, wantErr: true},
	} {
		t.Run(tc.value, func(t *testing.T) {
			m := map[string]string{KeyStableWindow: "90s"}
			if tc.set {
				m[KeyThawKeepAlive] = tc.value
			}
			c, err := NewConfigFromMap(m)
			// A bad value of Thaw's key never rejects the ConfigMap:
			// upstream accepts it, so its own keys still apply.
			if err != nil {
				t.Fatalf("config rejected: %v", err)
			}
			if c.StableWindow.Seconds() != 90 {
				t.Errorf("stable window %v: upstream's keys not applied", c.StableWindow)
			}
			if c.KeepAlive != tc.want {
				t.Errorf("KeepAlive %q, want %q", c.KeepAlive, tc.want)
			}
			if (c.KeepAliveErr != nil) != tc.wantErr {
				t.Fatalf("KeepAliveErr %v, want error %v", c.KeepAliveErr, tc.wantErr)
			}
			if tc.wantErr && !strings.Contains(c.KeepAliveErr.Error(), KeyThawKeepAlive) {
				t.Errorf("error %q does not name the key", c.KeepAliveErr)
			}
		})
	}
}

func TestKeepAliveFor(t *testing.T) {
	learned := &Config{KeepAlive: KeepAliveLearned}
	bad, _ := NewConfigFromMap(map[string]string{KeyThawKeepAlive: "yes"})
	for _, tc := range []struct {
		name    string
		cfg     *Config
		ann     map[string]string
		want    KeepAliveMode
		wantErr string
	}{
		{"nothing set", DefaultConfig(), nil, KeepAliveOff, ""},
		{"zero config", &Config{}, nil, KeepAliveOff, ""},
		{"cluster-wide", learned, nil, KeepAliveLearned, ""},
		{"annotation on", DefaultConfig(), map[string]string{KeepAliveAnnotationKey: "hybrid"}, KeepAliveHybrid, ""},
		{"annotation off wins", learned, map[string]string{KeepAliveAnnotationKey: "off"}, KeepAliveOff, ""},
		{"bad annotation: off for the revision", learned, map[string]string{KeepAliveAnnotationKey: "always"},
			KeepAliveOff, KeepAliveAnnotationKey + `: invalid value "always"`},
		{"bad key: off", bad, nil, KeepAliveOff, ""},
		{"bad key, annotation on", bad, map[string]string{KeepAliveAnnotationKey: "learned"}, KeepAliveLearned, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.KeepAliveFor(tc.ann)
			if got != tc.want {
				t.Errorf("mode %q, want %q", got, tc.want)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestKeepAliveTimeScale(t *testing.T) {
	for _, tc := range []struct {
		value string
		set   bool
		want  int
		bad   bool
	}{
		{want: 1}, {value: "12", set: true, want: 12}, {value: " 60 ", set: true, want: 60}, {value: "1", set: true, want: 1},
		{value: "7", set: true, want: 1, bad: true}, {value: "0", set: true, want: 1, bad: true},
		{value: "2.5", set: true, want: 1, bad: true}, {value: "120", set: true, want: 1, bad: true},
	} {
		ann := map[string]string{}
		if tc.set {
			ann[KeepAliveTimeScaleAnnotationKey] = tc.value
		}
		got, err := KeepAliveTimeScale(ann)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("%q: %d, %v; want %d, error %v", tc.value, got, err, tc.want, tc.bad)
		}
		if tc.bad && !strings.Contains(err.Error(), KeepAliveTimeScaleAnnotationKey) {
			t.Errorf("%q: error %q does not name the annotation", tc.value, err)
		}
	}
}
