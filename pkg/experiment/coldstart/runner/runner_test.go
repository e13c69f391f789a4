package runner

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/measure"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/report"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

func TestParseLevels(t *testing.T) {
	cases := []struct {
		in   string
		want []int
		err  string
	}{
		{in: "1,5,25,100", want: []int{1, 5, 25, 100}},
		{in: " 2 , 1 ", want: []int{2, 1}},
		{in: "1", want: []int{1}},
		{in: "", err: "not a positive integer"},
		{in: "1,,2", err: "not a positive integer"},
		{in: "0", err: "not a positive integer"},
		{in: "-3", err: "not a positive integer"},
		{in: "1,x", err: `"x" is not a positive integer`},
		{in: "5,5", err: "listed twice"},
	}
	for _, c := range cases {
		got, err := ParseLevels(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseLevels(%q) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Errorf("ParseLevels(%q) = %v %v, want %v", c.in, got, err, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("ParseLevels(%q) = %v, want %v", c.in, got, c.want)
			}
		}
	}
}

func TestDefaultServices(t *testing.T) {
	cases := []struct {
		levels []int
		repeat int
		want   int
	}{
		{[]int{1, 5, 25, 100}, 1, 100},
		{[]int{1}, 50, 50},      // the serial mode: 50 distinct services back to back
		{[]int{1}, 1, 1},        // one cold start
		{[]int{1, 2}, 3, 6},     // every round of the largest level on fresh services
		{[]int{1, 25}, 10, 100}, // capped at 100
		{[]int{200}, 1, 200},    // never below the largest level
	}
	for _, c := range cases {
		if got := DefaultServices(c.levels, c.repeat); got != c.want {
			t.Errorf("DefaultServices(%v, %d) = %d, want %d", c.levels, c.repeat, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	o := Options{Levels: []int{1, 5}, Repeat: 1, Services: 2, Namespace: "ns", Image: "img", Ingress: "x:80",
		Sides: []Side{{Name: "thaw", Images: map[string]string{"activator": "a"}}}}
	err := o.validate()
	for _, want := range []string{"no cluster client", "--parallel 5 needs at least 5 services", "no way to swap"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate error %v lacks %q", err, want)
		}
	}
}

func TestKsvcObject(t *testing.T) {
	u := ksvcObject("cs-007", "coldstart", "ko.local/apps/helloworld:dev", "1m")
	ann, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "annotations")
	if ann["autoscaling.knative.dev/window"] != "6s" || ann["queue.sidecar.serving.knative.dev/cpu-resource-request"] != "1m" {
		t.Errorf("annotations %v", ann)
	}
	if _, ok := ann["autoscaling.knative.dev/initial-scale"]; ok {
		t.Error("a revision created at zero is at desired scale -1, where the first poke is ignored")
	}
	ctrs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	c, _ := ctrs[0].(map[string]any)
	if c["image"] != "ko.local/apps/helloworld:dev" {
		t.Errorf("container %v", c)
	}
	if _, ok := c["readinessProbe"]; ok {
		t.Error("a readiness period slows queue-proxy's probing of the app")
	}
	if u.GetName() != "cs-007" || u.GetNamespace() != "coldstart" || u.GetKind() != "Service" {
		t.Errorf("object %v", u.Object)
	}
}

func TestReadyService(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "cs-000", "generation": int64(1)},
		"status": map[string]any{"observedGeneration": int64(1), "latestReadyRevisionName": "cs-000-00001",
			"url":        "http://cs-000.coldstart.example.com",
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}},
	}}
	s, why := readyService(u)
	if s == nil || s.Revision != "cs-000-00001" || s.Host != "cs-000.coldstart.example.com" || s.deployment() != "cs-000-00001-deployment" {
		t.Fatalf("%+v %s", s, why)
	}
	_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "Ready", "status": "Unknown", "reason": "Deploying"}}, "status", "conditions")
	if s, why := readyService(u); s != nil || !strings.Contains(why, "Deploying") {
		t.Errorf("not Ready: %+v %q", s, why)
	}
}

func TestSetConfigKeyRestores(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		data map[string]string
	}{
		{"key present", map[string]string{graceKey: "30s", "other": "x"}},
		{"key absent", map[string]string{"other": "x"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			kc := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: configAutoscaler, Namespace: systemNamespace}, Data: c.data})
			restore, err := setConfigKey(ctx, kc, graceKey, minGrace)
			if err != nil {
				t.Fatal(err)
			}
			cm, _ := kc.CoreV1().ConfigMaps(systemNamespace).Get(ctx, configAutoscaler, metav1.GetOptions{})
			if cm.Data[graceKey] != "6s" {
				t.Fatalf("set: %v", cm.Data)
			}
			// Someone else changes another key meanwhile: kept.
			cm.Data["late"] = "y"
			if _, err := kc.CoreV1().ConfigMaps(systemNamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := restore(ctx); err != nil {
				t.Fatal(err)
			}
			cm, _ = kc.CoreV1().ConfigMaps(systemNamespace).Get(ctx, configAutoscaler, metav1.GetOptions{})
			old, had := c.data[graceKey]
			if got, ok := cm.Data[graceKey]; ok != had || got != old || cm.Data["late"] != "y" || cm.Data["other"] != "x" {
				t.Errorf("restored: %v", cm.Data)
			}
		})
	}
	if _, err := setConfigKey(ctx, fake.NewClientset(), graceKey, minGrace); err == nil {
		t.Error("a missing config-autoscaler must be an error")
	}
}

func TestThawTimesJoinsHeaderAndRecord(t *testing.T) {
	send := time.Date(2026, 11, 26, 19, 45, 11, 0, time.UTC)
	ns := func(d time.Duration) int64 { return send.Add(d).UnixNano() }
	h := fmt.Sprintf("arrival=%d;poke=%d;ready=%d;firstbyte=%d;pod=10.88.1.9:8012",
		ns(time.Millisecond), ns(1100*time.Microsecond), ns(600*time.Millisecond), ns(603*time.Millisecond))
	recs := []measure.ScaleRecord{
		{Namespace: "coldstart", Revision: "cs-000-00001", PokeReceived: send.Add(-time.Minute), Decided: send.Add(-time.Minute)}, // an earlier cold start
		{Namespace: "coldstart", Revision: "cs-000-00001", PokeReceived: send.Add(1300 * time.Microsecond),
			Decided: send.Add(1500 * time.Microsecond), ScaleWritten: send.Add(4 * time.Millisecond), DesiredScale: 1},
	}
	s := &report.Sample{Revision: "cs-000-00001", Send: send, FirstByte: send.Add(604 * time.Millisecond)}
	tt := thawTimes(h, recs, "coldstart", s)
	if tt.Warm || tt.Pod != "10.88.1.9:8012" || !tt.Arrival.Equal(send.Add(time.Millisecond)) ||
		!tt.Decided.Equal(send.Add(1500*time.Microsecond)) || !tt.ScaleWritten.Equal(send.Add(4*time.Millisecond)) {
		t.Errorf("joined %+v", tt)
	}
	if tt := thawTimes("warm", recs, "coldstart", s); !tt.Warm || !tt.Arrival.IsZero() {
		t.Errorf("warm: %+v", tt)
	}
	// A malformed header keeps its text for the files and adds no instant.
	if tt := thawTimes("arrival=x", recs, "coldstart", s); tt.Header != "arrival=x" || !tt.Decided.IsZero() {
		t.Errorf("malformed: %+v", tt)
	}
}

func TestBrief(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ss := []report.Sample{
		{Status: 200, Send: t0, FirstByte: t0.Add(400 * time.Millisecond)},
		{Status: 200, Send: t0, FirstByte: t0.Add(600 * time.Millisecond)},
		{Status: 503},
	}
	if got := brief(ss); got != "2 ok, 1 failed (first: 503 ), total p50 400ms max 600ms" {
		t.Errorf("brief = %q", got)
	}
}

func TestUndecidedCountsPodAutoscalersNotAtZero(t *testing.T) {
	pa := func(name string, desired any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "autoscaling.internal.knative.dev/v1alpha1", "kind": "PodAutoscaler",
			"metadata": map[string]any{"name": name, "namespace": "coldstart"},
		}}
		if desired != nil {
			u.Object["status"] = map[string]any{"desiredScale": desired}
		}
		return u
	}
	scheme := runtime.NewScheme()
	dc := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{paGVR: "PodAutoscalerList"},
		pa("a-00001", int64(0)), pa("b-00001", int64(-1)), pa("c-00001", nil))
	r := &run{o: Options{Namespace: "coldstart", Client: &kube.Client{Dynamic: dc}}}
	svcs := []*service{{Revision: "a-00001"}, {Revision: "b-00001"}, {Revision: "c-00001"}, {Revision: "d-00001"}}
	left, example := r.undecided(context.Background(), svcs)
	if left != 3 || example == "" {
		t.Errorf("undecided = %d %q, want 3 (desired -1, unset, no PA)", left, example)
	}
	if left, _ := r.undecided(context.Background(), svcs[:1]); left != 0 {
		t.Errorf("a PA at desiredScale 0 is decided, got %d left", left)
	}
}
