package metricreconciler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgotesting "k8s.io/client-go/testing"

	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	fakeserving "knative.dev/serving/pkg/client/clientset/versioned/fake"
	servinginformers "knative.dev/serving/pkg/client/informers/externalversions"

	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
	"github.com/thaw-dev/thaw/pkg/autoscaler/scraper"
)

type fakeCollector struct {
	mu      sync.Mutex
	err     error
	cfgs    map[types.NamespacedName]collector.Config
	deleted []types.NamespacedName
}

func (f *fakeCollector) CreateOrUpdate(key types.NamespacedName, cfg collector.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfgs == nil {
		f.cfgs = map[types.NamespacedName]collector.Config{}
	}
	f.cfgs[key] = cfg
	return f.err
}

func (f *fakeCollector) Delete(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.cfgs, key)
	f.deleted = append(f.deleted, key)
}

var key = types.NamespacedName{Namespace: "ns", Name: "rev"}

func metric() *autoscalingv1alpha1.Metric {
	return &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Generation: 3,
			Annotations: map[string]string{"autoscaling.knative.dev/metric-aggregation-algorithm": "weighted-exponential"}},
		Spec: autoscalingv1alpha1.MetricSpec{StableWindow: time.Minute, PanicWindow: 6 * time.Second,
			ScrapeTarget: "rev-private"},
	}
}

func setup(t *testing.T, col *fakeCollector, objs ...*autoscalingv1alpha1.Metric) (*Reconciler, *fakeserving.Clientset) {
	t.Helper()
	client := fakeserving.NewSimpleClientset()
	inf := servinginformers.NewSharedInformerFactory(client, 0).Autoscaling().V1alpha1().Metrics()
	for _, m := range objs {
		if _, err := client.AutoscalingV1alpha1().Metrics(m.Namespace).Create(context.Background(), m, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := inf.Informer().GetIndexer().Add(m); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(Deps{Client: client, Metrics: inf, Collector: col, Logger: zaptest.NewLogger(t).Sugar()})
	if err != nil {
		t.Fatal(err)
	}
	client.ClearActions()
	return r, client
}

func statusUpdates(c *fakeserving.Clientset) []*autoscalingv1alpha1.Metric {
	var out []*autoscalingv1alpha1.Metric
	for _, a := range c.Actions() {
		if u, ok := a.(clientgotesting.UpdateAction); ok && a.GetSubresource() == "status" {
			out = append(out, u.GetObject().(*autoscalingv1alpha1.Metric))
		}
	}
	return out
}

func TestReconcileStatus(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus corev1.ConditionStatus
		wantReason string
	}{
		{name: "ready", wantStatus: corev1.ConditionTrue},
		{name: "no endpoints", err: fmt.Errorf("%w: boom", scraper.ErrNoEndpoints),
			wantStatus: corev1.ConditionUnknown, wantReason: ReasonNoEndpoints},
		{name: "no stat", err: fmt.Errorf("x: %w", scraper.ErrDidNotReceiveStat),
			wantStatus: corev1.ConditionFalse, wantReason: ReasonDidNotReceiveStat},
		{name: "other failure", err: scraper.ErrPodsExhausted,
			wantStatus: corev1.ConditionFalse, wantReason: ReasonCollectionFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := &fakeCollector{err: tc.err}
			r, client := setup(t, col, metric())
			if err := r.Reconcile(context.Background(), key); err != nil {
				t.Fatal(err)
			}
			cfg := col.cfgs[key]
			if cfg != (collector.Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second, Weighted: true,
				ScrapeTarget: "rev-private"}) {
				t.Errorf("collector config = %+v", cfg)
			}
			ups := statusUpdates(client)
			if len(ups) != 1 {
				t.Fatalf("status updates = %d, want 1", len(ups))
			}
			got := ups[0]
			c := got.Status.GetCondition(autoscalingv1alpha1.MetricConditionReady)
			if c == nil || c.Status != tc.wantStatus || c.Reason != tc.wantReason {
				t.Fatalf("Ready = %+v, want %s/%s", c, tc.wantStatus, tc.wantReason)
			}
			if got.Status.ObservedGeneration != 3 {
				t.Errorf("observedGeneration = %d, want 3", got.Status.ObservedGeneration)
			}

			// Same state again, with the written status in the cache: no write.
			r2, client2 := setup(t, col, got)
			if err := r2.Reconcile(context.Background(), key); err != nil {
				t.Fatal(err)
			}
			if n := len(statusUpdates(client2)); n != 0 {
				t.Fatalf("status updates on an unchanged metric = %d, want 0", n)
			}
		})
	}
}

func TestReconcileInvalidWindows(t *testing.T) {
	for _, tc := range []struct {
		name          string
		stable, panic time.Duration
	}{
		{"zero stable", 0, time.Second},
		{"huge stable", 100 * 365 * 24 * time.Hour, time.Second},
		{"panic beyond stable", time.Minute, 2 * time.Minute},
		{"negative panic", time.Minute, -time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := &fakeCollector{}
			m := metric()
			m.Spec.StableWindow, m.Spec.PanicWindow = tc.stable, tc.panic
			r, client := setup(t, col, m)
			if err := r.Reconcile(context.Background(), key); err != nil {
				t.Fatal(err)
			}
			if _, ok := col.cfgs[key]; ok {
				t.Fatal("collection created for invalid windows")
			}
			ups := statusUpdates(client)
			if len(ups) != 1 {
				t.Fatalf("status updates = %d", len(ups))
			}
			c := ups[0].Status.GetCondition(autoscalingv1alpha1.MetricConditionReady)
			if c.Status != corev1.ConditionFalse || c.Reason != ReasonCollectionFailed {
				t.Fatalf("Ready = %+v", c)
			}
		})
	}
}

func TestReconcileDeleted(t *testing.T) {
	col := &fakeCollector{}
	r, client := setup(t, col)
	if err := r.Reconcile(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if len(col.deleted) != 1 || col.deleted[0] != key {
		t.Fatalf("deleted = %v, want [%v]", col.deleted, key)
	}
	if len(client.Actions()) != 0 {
		t.Fatalf("actions = %v, want none", client.Actions())
	}
}

func TestRunProcessesQueue(t *testing.T) {
	col := &fakeCollector{}
	client := fakeserving.NewSimpleClientset(metric())
	factory := servinginformers.NewSharedInformerFactory(client, 0)
	inf := factory.Autoscaling().V1alpha1().Metrics()
	r, err := New(Deps{Client: client, Metrics: inf, Collector: col, Logger: zaptest.NewLogger(t).Sugar()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, 2) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := client.AutoscalingV1alpha1().Metrics(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
		if err == nil && m.Status.GetCondition(autoscalingv1alpha1.MetricConditionReady).IsTrue() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("metric never became Ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	factory.Shutdown()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// A replica that does not hold the Metric's bucket keeps its collection (the windows stay warm for a
// hand-over) but leaves the status to the holder; once it holds the bucket, it writes it.
func TestReconcileOnlyHolderWritesStatus(t *testing.T) {
	col := &fakeCollector{}
	client := fakeserving.NewSimpleClientset()
	inf := servinginformers.NewSharedInformerFactory(client, 0).Autoscaling().V1alpha1().Metrics()
	m := metric()
	if _, err := client.AutoscalingV1alpha1().Metrics(m.Namespace).Create(context.Background(), m, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := inf.Informer().GetIndexer().Add(m); err != nil {
		t.Fatal(err)
	}
	var holds atomic.Bool
	r, err := New(Deps{Client: client, Metrics: inf, Collector: col, Logger: zaptest.NewLogger(t).Sugar(),
		Owns: func(types.NamespacedName) bool { return holds.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	client.ClearActions()
	if err := r.Reconcile(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if _, ok := col.cfgs[key]; !ok {
		t.Fatal("no collection on a replica without the bucket")
	}
	if n := len(statusUpdates(client)); n != 0 {
		t.Fatalf("%d status writes by a replica without the bucket", n)
	}
	holds.Store(true)
	if err := r.Reconcile(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if n := len(statusUpdates(client)); n != 1 {
		t.Fatalf("%d status writes by the holder, want 1", n)
	}
}
