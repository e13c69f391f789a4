package asconfig

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/thaw-dev/thaw/pkg/cmwatch"
)

func cm(ns, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

func TestStoreKeepsLastGood(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s := NewAutoscalerStore(zap.New(core).Sugar())
	if *s.Load() != *DefaultConfig() {
		t.Fatalf("initial %+v", *s.Load())
	}
	var seen []*Config
	s.OnChange(func(c *Config) { seen = append(seen, c) })

	if err := s.OnConfigMap(cm("knative-serving", ConfigName, map[string]string{KeyStableWindow: "90s"})); err != nil {
		t.Fatal(err)
	}
	if got := s.Load().StableWindow; got != 90*time.Second {
		t.Fatalf("stable window %v after update", got)
	}
	before := logs.Len()
	if err := s.OnConfigMap(cm("knative-serving", ConfigName, map[string]string{KeyStableWindow: "1s"})); err == nil {
		t.Fatal("invalid ConfigMap accepted")
	}
	if got := s.Load().StableWindow; got != 90*time.Second {
		t.Fatalf("invalid update replaced the config: stable window %v", got)
	}
	if errs := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); errs != 1 || logs.Len() != before+1 {
		t.Fatalf("%d error lines, %d lines in all for one invalid update; want exactly one", errs, logs.Len()-before)
	}
	if err := s.OnConfigMap(cm("knative-serving", "config-other", map[string]string{KeyStableWindow: "1s"})); err != nil {
		t.Fatalf("another ConfigMap's data was parsed: %v", err)
	}
	s.OnDelete()
	if *s.Load() != *DefaultConfig() {
		t.Fatalf("after delete %+v, want defaults", *s.Load())
	}
	if len(seen) != 2 || seen[0].StableWindow != 90*time.Second || *seen[1] != *DefaultConfig() {
		t.Fatalf("observers saw %d configs", len(seen))
	}
}

func TestDeploymentStore(t *testing.T) {
	s := NewDeploymentStore(zap.NewNop().Sugar())
	if got := s.Load().ProgressDeadline; got != 600*time.Second {
		t.Fatalf("default progress deadline %v", got)
	}
	_ = s.OnConfigMap(cm("ns", DeploymentConfigName, map[string]string{KeyProgressDeadline: "120s", "queue-sidecar-image": "x"}))
	if got := s.Load().ProgressDeadline; got != 120*time.Second {
		t.Fatalf("progress deadline %v", got)
	}
}

func TestWatch(t *testing.T) {
	const ns = "knative-serving"
	client := fake.NewSimpleClientset(
		cm(ns, ConfigName, map[string]string{KeyMaxScaleUpRate: "10"}),
		cm(ns, "config-decoy", map[string]string{KeyMaxScaleUpRate: "99"}),
		cm("elsewhere", ConfigName, map[string]string{KeyMaxScaleUpRate: "77"}),
	)
	s := NewAutoscalerStore(zap.NewNop().Sugar())
	changed := make(chan *Config, 10)
	s.OnChange(func(c *Config) { changed <- c })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := cmwatch.Watch(ctx, ctx, client, ns, s); err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, a := range client.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok {
			listed = true
			if fs := l.GetListRestrictions().Fields.String(); fs != "metadata.name="+ConfigName || l.GetNamespace() != ns {
				t.Fatalf("list in %q with field selector %q: not scoped to the one ConfigMap", l.GetNamespace(), fs)
			}
		}
	}
	if !listed {
		t.Fatal("no list action")
	}
	if got := s.Load().MaxScaleUpRate; got != 10 {
		t.Fatalf("after sync max-scale-up-rate = %v, want 10", got)
	}
	wait := func() *Config {
		t.Helper()
		select {
		case c := <-changed:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no config change seen")
			return nil
		}
	}
	wait() // the initial add

	cms := client.CoreV1().ConfigMaps(ns)
	if _, err := cms.Update(ctx, cm(ns, ConfigName, map[string]string{KeyMaxScaleUpRate: "20"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := wait(); c.MaxScaleUpRate != 20 || s.Load().MaxScaleUpRate != 20 {
		t.Fatalf("live update not applied: %v", c.MaxScaleUpRate)
	}
	// Invalid, then valid: the invalid one changes nothing, the valid one lands.
	if _, err := cms.Update(ctx, cm(ns, ConfigName, map[string]string{KeyMaxScaleUpRate: "0.5"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Update(ctx, cm(ns, ConfigName, map[string]string{KeyMaxScaleUpRate: "30"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := wait(); c.MaxScaleUpRate != 30 {
		t.Fatalf("after invalid+valid updates: %v, want 30", c.MaxScaleUpRate)
	}
	if err := cms.Delete(ctx, ConfigName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := wait(); *c != *DefaultConfig() {
		t.Fatalf("after delete %+v", *c)
	}
}

func TestWatchCancelledBeforeSync(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := cmwatch.Watch(ctx, ctx, fake.NewSimpleClientset(), "ns", NewAutoscalerStore(zap.NewNop().Sugar())); err == nil {
		t.Fatal("Watch on a cancelled context succeeded")
	}
}
