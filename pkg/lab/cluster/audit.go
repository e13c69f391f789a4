package cluster

import "path/filepath"

// AuditLog is the apiserver's audit log: one JSON line per completed write of a Deployment's replicas
// (the autoscalers' /scale patches), with microsecond request-received and completion times. The
// cold-start experiment reads it as the host-clock time of each scale from zero.
func (c Config) AuditLog() string { return filepath.Join(c.LogDir(), "audit.log") }

func (c Config) auditPolicyFile() string { return filepath.Join(c.ConfDir(), "audit-policy.yaml") }

// auditPolicy logs writes to Deployments and their scale subresource at Request level (the body says
// which replicas were set: upstream patches the Deployment, Thaw its /scale), and nothing else. Only
// the ResponseComplete stage is kept: it carries both timestamps.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Request
  verbs: ["patch", "update"]
  resources:
  - group: "apps"
    resources: ["deployments", "deployments/scale"]
- level: None
`

func (c Config) auditArgs() []string {
	return []string{
		"--audit-policy-file=" + c.auditPolicyFile(),
		"--audit-log-path=" + c.AuditLog(),
		"--audit-log-format=json",
		// Bounded: a few hundred bytes per scale event.
		"--audit-log-maxsize=50", "--audit-log-maxbackup=1",
	}
}
