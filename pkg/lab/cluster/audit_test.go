package cluster

import (
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/thaw-dev/thaw/pkg/lab/pki"
)

func TestAuditPolicyLogsOnlyDeploymentWrites(t *testing.T) {
	var p struct {
		APIVersion, Kind string
		OmitStages       []string `json:"omitStages"`
		Rules            []struct {
			Level     string
			Verbs     []string
			Resources []struct {
				Group     string
				Resources []string
			}
		}
	}
	if err := yaml.UnmarshalStrict([]byte(auditPolicy), &p); err != nil {
		t.Fatal(err)
	}
	if p.APIVersion != "audit.k8s.io/v1" || p.Kind != "Policy" || !slices.Equal(p.OmitStages, []string{"RequestReceived"}) {
		t.Errorf("policy header: %+v", p)
	}
	if len(p.Rules) != 2 {
		t.Fatalf("rules = %d, want 2", len(p.Rules))
	}
	r := p.Rules[0]
	if r.Level != "Request" || !slices.Equal(r.Verbs, []string{"patch", "update"}) || len(r.Resources) != 1 ||
		r.Resources[0].Group != "apps" || !slices.Equal(r.Resources[0].Resources, []string{"deployments", "deployments/scale"}) {
		t.Errorf("first rule: %+v", r)
	}
	// The catch-all must come last and log nothing: every other request costs no audit write.
	if last := p.Rules[1]; last.Level != "None" || len(last.Verbs) != 0 || len(last.Resources) != 0 {
		t.Errorf("last rule: %+v", last)
	}
}

func TestAPIServerArgsAudit(t *testing.T) {
	l := New(testConfig(), Tools{}, nil)
	args := strings.Join(l.apiserverArgs(&pki.Files{}), " ")
	for _, want := range []string{
		"--audit-policy-file=/cache/lab/run/conf/audit-policy.yaml",
		"--audit-log-path=/cache/lab/logs/audit.log",
		"--audit-log-format=json",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("apiserver args lack %s: %s", want, args)
		}
	}
}
