package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator"
	"github.com/thaw-dev/thaw/pkg/cmwatch"
	"github.com/thaw-dev/thaw/pkg/observability"
)

func TestConfigMapsApplyAtRunTime(t *testing.T) {
	kube := fake.NewSimpleClientset()
	p := observability.NewProfiling(false)
	var out bytes.Buffer
	rl := activator.NewRequestLogger(&out)
	logger := zaptest.NewLogger(t).Sugar()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// handled carries each ConfigMap the handler has finished with: the signal that an ignored one
	// was seen and ignored, rather than not yet delivered.
	handled := make(chan *corev1.ConfigMap, 10)
	h := observabilityHandler(p, rl, logger)
	if err := cmwatch.Watch(ctx, ctx, kube, "knative-serving", cmwatch.Funcs{ConfigMap: "config-observability",
		Update: func(cm *corev1.ConfigMap) error { err := h(cm); handled <- cm; return err }}); err != nil {
		t.Fatal(err)
	}

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "knative-serving", Name: "config-observability"},
		Data: map[string]string{"runtime-profiling": "enabled"}}
	if _, err := kube.CoreV1().ConfigMaps("knative-serving").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p.Enabled)
	cm.Data = map[string]string{"runtime-profiling": "disabled"}
	if _, err := kube.CoreV1().ConfigMaps("knative-serving").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !p.Enabled() })
	// Another namespace's ConfigMap of the same name is not watched.
	other := cm.DeepCopy()
	other.Namespace, other.Data = "default", map[string]string{"runtime-profiling": "enabled"}
	if _, err := kube.CoreV1().ConfigMaps("default").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Invalid values are ignored: profiling stays as it was.
	cm.Data = map[string]string{"runtime-profiling": "sometimes"}
	if _, err := kube.CoreV1().ConfigMaps("knative-serving").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for seen := false; !seen; {
		select {
		case got := <-handled:
			if got.Namespace != "knative-serving" {
				t.Fatalf("the handler got %s's ConfigMap", got.Namespace)
			}
			seen = got.Data["runtime-profiling"] == "sometimes"
		case <-time.After(10 * time.Second):
			t.Fatal("the invalid update never reached the handler")
		}
	}
	if p.Enabled() {
		t.Fatal("an invalid or foreign ConfigMap changed profiling")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, "condition", cond)
}
