package host

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thaw-dev/thaw/internal/testutil"
)

// TestNetworkRoundTrip creates a bridge of its own (root only) and checks that teardown plus sysctl
// restore leave the host snapshot unchanged.
func TestNetworkRoundTrip(t *testing.T) {
	testutil.NeedRoot(t, "a bridge, routes and sysctls")
	if _, err := os.Stat("/usr/sbin/ip"); err != nil {
		testutil.SkipOutsideCI(t, "no ip command")
	}
	ctx := context.Background()
	n := Network{Bridge: "thawtest0", BridgeCIDR: "10.199.0.1/16", ServiceCIDR: "10.198.0.0/16"}
	statePath := filepath.Join(t.TempDir(), "state.json")
	before := Take(ctx)
	st, err := LoadOrRecord(statePath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		TeardownNetwork(ctx, n)
		st.RestoreSysctls()
	})
	if err := SetupNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	// Idempotent.
	if err := SetupNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	mid := Take(ctx)
	d := strings.Join(Diff(before, mid), "\n")
	if !strings.Contains(d, "link added: thawtest0") || !strings.Contains(d, "route added: 10.198.0.0/16 dev thawtest0") {
		t.Fatalf("setup not visible in the snapshot diff:\n%s", d)
	}
	if errs := TeardownNetwork(ctx, n); len(errs) > 0 {
		t.Fatal(errs)
	}
	if errs := st.RestoreSysctls(); len(errs) > 0 {
		t.Fatal(errs)
	}
	// Other packages' tests may change the host meanwhile: look only at what this test touched.
	for _, line := range Diff(before, Take(ctx)) {
		if strings.Contains(line, "thawtest0") || strings.Contains(line, "10.198.") || strings.Contains(line, "10.199.") {
			t.Errorf("host differs after teardown: %s", line)
		}
	}
}
