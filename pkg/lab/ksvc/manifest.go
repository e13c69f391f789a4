package ksvc

import (
	"fmt"
	"sort"
	"strings"
)

// Manifest is a Knative Service of one of the lab's apps, rendered as YAML
// for kube.Decode. Tests and benchmarks build their services from it so the
// shape (requests, readiness period) stays the same everywhere.
type Manifest struct {
	Name, Namespace, Image string
	// Annotations go on the revision template (autoscaling.knative.dev/*).
	Annotations map[string]string
	// ContainerConcurrency; 0 leaves it unset.
	ContainerConcurrency int
}

// YAML renders m with small resource requests (many pods fit the lab's node)
// and a 1 s readiness period, as the lab's suites expect.
func (m Manifest) YAML() string {
	keys := make([]string, 0, len(m.Annotations))
	for k := range m.Annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ann strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&ann, "        %s: %q\n", k, m.Annotations[k])
	}
	cc := ""
	if m.ContainerConcurrency > 0 {
		cc = fmt.Sprintf("      containerConcurrency: %d\n", m.ContainerConcurrency)
	}
	return fmt.Sprintf(`apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: %s
  namespace: %s
spec:
  template:
    metadata:
      annotations:
%s    spec:
%s      containers:
      - image: %s
        resources:
          requests: {cpu: 30m, memory: 20Mi}
        readinessProbe:
          periodSeconds: 1
`, m.Name, m.Namespace, ann.String(), cc, m.Image)
}
