package workloop

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
)

func TestRunRetriesFailuresAndStops(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemFastSlowRateLimiter[types.NamespacedName](0, 0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu       sync.Mutex
		attempts = map[types.NamespacedName]int{}
		failures []types.NamespacedName
	)
	a, b := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"}
	reconciled := make(chan types.NamespacedName, 10)
	reconcile := func(_ context.Context, key types.NamespacedName) error {
		mu.Lock()
		attempts[key]++
		n := attempts[key]
		mu.Unlock()
		if key == b && n == 1 {
			return errors.New("first try fails")
		}
		reconciled <- key
		return nil
	}
	onError := func(key types.NamespacedName, _ error) {
		mu.Lock()
		failures = append(failures, key)
		mu.Unlock()
	}
	stopped := make(chan struct{})
	go func() {
		Run(ctx, q, 2, reconcile, onError)
		close(stopped)
	}()
	q.Add(a)
	q.Add(b)
	got := map[types.NamespacedName]bool{}
	for len(got) < 2 {
		select {
		case k := <-reconciled:
			got[k] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("reconciled %v, want a and b (b after one retry)", got)
		}
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts[b] != 2 || len(failures) != 1 || failures[0] != b {
		t.Fatalf("attempts = %v, failures = %v; want b tried twice and one failure reported", attempts, failures)
	}
	if q.NumRequeues(b) != 0 {
		t.Fatalf("b still has %d requeues after succeeding", q.NumRequeues(b))
	}
	if !q.ShuttingDown() {
		t.Fatal("queue not shut down")
	}
}
