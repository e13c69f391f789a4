// Package upstream runs upstream Knative Serving's own test suites (knative.dev/serving/test/ha and
// the autoscale tests of knative.dev/serving/test/e2e), compiled from the module cache, against the lab
// with upstream's activator and autoscaler and then with Thaw's swapped in, at the HA shapes upstream's
// CI uses. The lab part carries the build tag e2e (see README.md here); the files without it hold the
// plan (sides, shapes, suites, flags), the parsing of the suites' output and the cluster steps, and
// are unit-tested without a lab.
package upstream

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sides, in the order a run takes them: upstream's components first, as the reference.
const (
	SideUpstream = "upstream"
	SideThaw     = "thaw"
)

// ParseSides reads THAW_UPSTREAM_SIDES: thaw, upstream or both (the default when empty).
func ParseSides(v string) ([]string, error) {
	switch strings.TrimSpace(v) {
	case "", "both":
		return []string{SideUpstream, SideThaw}, nil
	case SideUpstream:
		return []string{SideUpstream}, nil
	case SideThaw:
		return []string{SideThaw}, nil
	}
	return nil, fmt.Errorf("sides %q: want thaw, upstream or both", v)
}

// Shape is the control plane's HA shape: autoscaler (and activator) replicas and autoscaler buckets.
type Shape struct {
	Replicas int
	Buckets  int
}

func (s Shape) String() string { return fmt.Sprintf("%dx%d", s.Replicas, s.Buckets) }

// MaxBuckets is knative.dev/pkg's bound on config-leader-election buckets.
const MaxBuckets = 10

// DefaultShapes are the two shapes the issue asks for: 2 replicas with one bucket, and upstream CI's
// 3 replicas with 10 buckets.
const DefaultShapes = "2x1,3x10"

// ParseShapes reads THAW_UPSTREAM_SHAPES, e.g. "2x1,3x10" (DefaultShapes when empty).
func ParseShapes(v string) ([]Shape, error) {
	if strings.TrimSpace(v) == "" {
		v = DefaultShapes
	}
	var out []Shape
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		r, b, ok := strings.Cut(f, "x")
		if !ok {
			return nil, fmt.Errorf("shape %q: want <replicas>x<buckets>, e.g. 3x10", f)
		}
		rn, err1 := strconv.Atoi(r)
		bn, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("shape %q: want <replicas>x<buckets>, e.g. 3x10", f)
		}
		// Upstream's activator HA tests delete one activator while another serves: one replica
		// cannot pass them.
		if rn < 2 {
			return nil, fmt.Errorf("shape %q: at least 2 replicas (the HA tests need a survivor)", f)
		}
		if bn < 1 || bn > MaxBuckets {
			return nil, fmt.Errorf("shape %q: buckets must be 1..%d", f, MaxBuckets)
		}
		out = append(out, Shape{Replicas: rn, Buckets: bn})
	}
	return out, nil
}

// Suite is one of upstream's test packages and the tests of it that run.
type Suite struct {
	Name    string // ha, e2e
	Package string // import path in knative.dev/serving
	Run     string // -test.run
	// Timeout bounds one run of the binary (-test.timeout).
	Timeout time.Duration
}

// Suites are the suites the tier knows, by name.
var Suites = map[string]Suite{
	"ha": {
		Name: "ha", Package: "knative.dev/serving/test/ha",
		Run:     "^TestAutoscalerHA$|^TestActivatorHAGraceful$|^TestActivatorHANonGraceful$",
		Timeout: 20 * time.Minute,
	},
	// autoscaler-ha is ha's autoscaler test alone: the CI-sized check of the buckets and the hand-over
	// (the two activator tests take 70% of the ha suite's time).
	"autoscaler-ha": {
		Name: "autoscaler-ha", Package: "knative.dev/serving/test/ha",
		Run:     "^TestAutoscalerHA$",
		Timeout: 10 * time.Minute,
	},
	"e2e": {
		Name: "e2e", Package: "knative.dev/serving/test/e2e",
		Run: "^(TestAutoscaleUpDownUp|TestAutoscaleUpCountPods|TestRPSBasedAutoscaleUpCountPods|" +
			"TestFastScaleToZero|TestActivationScale|TestTargetBurstCapacity.*)$",
		Timeout: 20 * time.Minute,
	},
}

// DefaultSuites is the order suites run in when THAW_UPSTREAM_SUITES is empty.
const DefaultSuites = "ha,e2e"

// ParseSuites reads THAW_UPSTREAM_SUITES, e.g. "ha,e2e".
func ParseSuites(v string) ([]Suite, error) {
	if strings.TrimSpace(v) == "" {
		v = DefaultSuites
	}
	var out []Suite
	for _, n := range strings.Split(v, ",") {
		s, ok := Suites[strings.TrimSpace(n)]
		if !ok {
			return nil, fmt.Errorf("suite %q: want ha, autoscaler-ha or e2e", n)
		}
		out = append(out, s)
	}
	return out, nil
}

// Target is what the suites are pointed at.
type Target struct {
	Kubeconfig string
	// IngressEndpoint is the address the tests dial for every ksvc URL (the lab's bridge IP); the
	// Host header carries the ksvc's domain.
	IngressEndpoint string
	DockerRepo      string // images are <DockerRepo>/<name>:<Tag>
	Tag             string
	// Gateway is namespace/name of the Service knative.dev/pkg/test/ingress looks up (it must exist
	// and have no port 80 with a NodePort, or the tests dial that NodePort instead of port 80).
	GatewayNamespace, Gateway string
	SystemNamespace           string
}

// Args are the test binary's flags for suite s at shape sh.
func (t Target) Args(s Suite, sh Shape) []string {
	return []string{
		"-test.v", "-test.count=1",
		"-test.run=" + s.Run,
		"-test.timeout=" + s.Timeout.String(),
		"--kubeconfig=" + t.Kubeconfig,
		"--ingressendpoint=" + t.IngressEndpoint,
		"--dockerrepo=" + t.DockerRepo,
		"--tag=" + t.Tag,
		"--resolvabledomain=false",
		"--replicas=" + strconv.Itoa(sh.Replicas),
		"--buckets=" + strconv.Itoa(sh.Buckets),
	}
}

// Env is the test binary's environment: base plus the gateway override and the system namespace.
func (t Target) Env(base []string) []string {
	return append(append([]string{}, base...),
		"GATEWAY_OVERRIDE="+t.Gateway,
		"GATEWAY_NAMESPACE_OVERRIDE="+t.GatewayNamespace,
		"SYSTEM_NAMESPACE="+t.SystemNamespace,
	)
}

// TestImages are the images of knative.dev/serving/test/test_images the selected tests deploy:
// pizzaplanetv1/v2 (ha), autoscale (ha's TestAutoscalerHA and the e2e autoscale tests), helloworld
// (cheap to add, used by most other e2e tests). None of them reads files from kodata.
var TestImages = []string{"autoscale", "helloworld", "pizzaplanetv1", "pizzaplanetv2"}

// TestImagePackage is the import path of a test image's main package.
func TestImagePackage(name string) string { return "knative.dev/serving/test/test_images/" + name }
