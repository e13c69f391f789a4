package internaltls

import "testing"

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]string
		want    bool
		wantErr bool
	}{
		{name: "unset", data: nil},
		{name: "enabled", data: map[string]string{ConfigKey: "enabled"}, want: true},
		{name: "Enabled", data: map[string]string{ConfigKey: "Enabled"}, want: true},
		{name: "disabled", data: map[string]string{ConfigKey: "disabled"}},
		{name: "legacy true", data: map[string]string{LegacyConfigKey: "true"}, want: true},
		{name: "legacy true, new disabled", data: map[string]string{LegacyConfigKey: "true", ConfigKey: "disabled"}, want: true},
		{name: "legacy false, new enabled", data: map[string]string{LegacyConfigKey: "false", ConfigKey: "enabled"}, want: true},
		{name: "invalid", data: map[string]string{ConfigKey: "yes"}, wantErr: true},
		{name: "invalid legacy", data: map[string]string{LegacyConfigKey: "maybe"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Enabled(tc.data)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Enabled(%v) = %v, %v; want %v, error %v", tc.data, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestPortsSecure(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.1:8012", "10.0.0.1:8112"},
		{"10.0.0.1:8013", "10.0.0.1:8112"},
		{"10.96.0.10:80", "10.96.0.10:443"},
		{"10.96.0.10:81", "10.96.0.10:443"},
		{"[fd00::1]:8012", "[fd00::1]:8112"},
		{"10.0.0.1", "10.0.0.1:8112"},
	} {
		if got := DefaultPorts.Secure(tc.in); got != tc.want {
			t.Errorf("Secure(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
