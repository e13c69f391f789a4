package stack

import (
	"io"
	"strings"
	"testing"
)

func TestClusterDomainOption(t *testing.T) {
	for _, tc := range []struct {
		domain, err string
	}{
		{domain: ""},
		{domain: "thaw.test"},
		{domain: "cluster.local"},
		{domain: "Not_A.Domain", err: "cluster domain"},
		{domain: "a..b", err: "cluster domain"},
	} {
		o := Options{Cache: t.TempDir(), Repo: t.TempDir(), Out: io.Discard, ClusterDomain: tc.domain}
		err := o.defaults()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: %v, want error %q", tc.domain, err, tc.err)
		}
	}
	if d := Config(t.TempDir()).ClusterDomain; d != "cluster.local" {
		t.Errorf("default domain %q", d)
	}
}
