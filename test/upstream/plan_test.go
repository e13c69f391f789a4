package upstream

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSides(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", []string{SideUpstream, SideThaw}, false},
		{"both", []string{SideUpstream, SideThaw}, false},
		{"thaw", []string{SideThaw}, false},
		{" upstream ", []string{SideUpstream}, false},
		{"mine", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseSides(tt.in)
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseSides(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseShapes(t *testing.T) {
	tests := []struct {
		in      string
		want    []Shape
		wantErr string
	}{
		{"", []Shape{{2, 1}, {3, 10}}, ""},
		{"3x10", []Shape{{3, 10}}, ""},
		{"2x1, 2x2", []Shape{{2, 1}, {2, 2}}, ""},
		{"1x1", nil, "at least 2 replicas"},
		{"2x0", nil, "buckets must be 1..10"},
		{"2x11", nil, "buckets must be 1..10"},
		{"3", nil, "want <replicas>x<buckets>"},
		{"ax1", nil, "want <replicas>x<buckets>"},
	}
	for _, tt := range tests {
		got, err := ParseShapes(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseShapes(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseShapes(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if s := (Shape{3, 10}).String(); s != "3x10" {
		t.Errorf("String = %q", s)
	}
}

func TestParseSuites(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", []string{"ha", "e2e"}, false},
		{"ha", []string{"ha"}, false},
		{"e2e, ha", []string{"e2e", "ha"}, false},
		{"conformance", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseSuites(tt.in)
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
		}
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(names, tt.want) {
			t.Errorf("ParseSuites(%q) = %v, %v; want %v, err %v", tt.in, names, err, tt.want, tt.wantErr)
		}
	}
}

func TestTargetArgsAndEnv(t *testing.T) {
	tg := Target{Kubeconfig: "/k", IngressEndpoint: "10.88.0.1", DockerRepo: "ko.local/knative-test", Tag: "e2e",
		GatewayNamespace: "knative-serving", Gateway: "gw", SystemNamespace: "knative-serving"}
	args := strings.Join(tg.Args(Suites["ha"], Shape{3, 10}), " ")
	for _, want := range []string{"-test.run=^TestAutoscalerHA$|^TestActivatorHAGraceful$|^TestActivatorHANonGraceful$",
		"--kubeconfig=/k", "--ingressendpoint=10.88.0.1", "--dockerrepo=ko.local/knative-test", "--tag=e2e",
		"--resolvabledomain=false", "--replicas=3", "--buckets=10", "-test.v", "-test.timeout=20m0s"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	env := strings.Join(tg.Env([]string{"PATH=/bin"}), " ")
	for _, want := range []string{"PATH=/bin", "GATEWAY_OVERRIDE=gw", "GATEWAY_NAMESPACE_OVERRIDE=knative-serving", "SYSTEM_NAMESPACE=knative-serving"} {
		if !strings.Contains(env, want) {
			t.Errorf("env %q lacks %q", env, want)
		}
	}
}

// The e2e filter takes the tests and the TBC variants, and nothing that merely shares a prefix.
func TestE2EFilter(t *testing.T) {
	re := Suites["e2e"].Run
	for name, want := range map[string]bool{
		"TestAutoscaleUpDownUp": true, "TestAutoscaleUpCountPods": true, "TestRPSBasedAutoscaleUpCountPods": true,
		"TestFastScaleToZero": true, "TestActivationScale": true, "TestTargetBurstCapacity": true,
		"TestTargetBurstCapacityMinusOne": true, "TestTargetBurstCapacityZero": true,
		"TestAutoscaleSustaining": false, "TestActivatorOverload": false,
	} {
		if got := mustMatch(t, re, name); got != want {
			t.Errorf("%s matched %v, want %v", name, got, want)
		}
	}
}

func TestParseDownload(t *testing.T) {
	m, err := parseDownload([]byte(`{"Path":"knative.dev/serving","Version":"v0.50.0","Dir":"/m/serving@v0.50.0"}`))
	if err != nil || m.Version != "v0.50.0" || m.Dir != "/m/serving@v0.50.0" {
		t.Errorf("parseDownload = %+v, %v", m, err)
	}
	if _, err := parseDownload([]byte(`{"Path":"x","Error":"not found"}`)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("parseDownload of an error = %v", err)
	}
	if got := CacheDirFor("/c", "v0.50.0"); got != "/c/knative-v0.50.0/upstream-tests" {
		t.Errorf("CacheDirFor = %q", got)
	}
}

// RunSuite streams, parses and reports a failing binary; a fake suite is a shell script.
func TestRunSuite(t *testing.T) {
	tests := []struct {
		name, script string
		wantErr      bool
		want         []Result
	}{
		{"pass", "echo '=== RUN   TestA'; echo '--- PASS: TestA (1.50s)'; echo PASS", false,
			[]Result{{"TestA", "PASS", 1500 * time.Millisecond}}},
		{"fail", "echo '=== RUN   TestA'; echo '--- FAIL: TestA (2.00s)'; echo FAIL; exit 1", true,
			[]Result{{"TestA", "FAIL", 2 * time.Second}}},
		{"crash", "echo '=== RUN   TestA'; echo 'panic: test timed out' >&2; exit 2", true,
			[]Result{{"TestA", NoResult, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "suite.test")
			if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+tt.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			got, err := RunSuite(context.Background(), bin, nil, nil, "", &syncWriter{b: &out})
			if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RunSuite = %v, %v; want %v, err %v", got, err, tt.want, tt.wantErr)
			}
			if !strings.Contains(out.String(), "=== RUN   TestA") {
				t.Errorf("output not streamed: %q", out.String())
			}
		})
	}
}
