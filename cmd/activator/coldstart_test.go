package main

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/pkg/coldstart"
	"github.com/thaw-dev/thaw/pkg/throttler"
)

func TestPodReadyTap(t *testing.T) {
	rev := types.NamespacedName{Namespace: "ns", Name: "rev"}
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	thr := throttler.New("10.0.0.9", throttler.Options{}, clk, zaptest.NewLogger(t).Sugar())
	thr.UpsertRevision(rev, throttler.RevisionConfig{ContainerConcurrency: 1})
	tr := coldstart.NewTracker(coldstart.TrackerOptions{Routable: thr.Routable, Clock: clk})
	tap := podReadyTap{thr, tr, clk}

	req := tr.Arrive(context.Background(), rev)
	if req == nil {
		t.Fatal("revision without pods is warm")
	}
	clk.Step(time.Second)
	tap.UpdateBackends(rev, throttler.Backends{}) // nothing ready yet
	clk.Step(time.Second)
	ready := clk.Now()
	tap.UpdateBackends(rev, throttler.Backends{Dests: []string{"10.1.0.1:8012"}})
	clk.Step(time.Second)
	tap.UpdateBackends(rev, throttler.Backends{Dests: []string{"10.1.0.1:8012", "10.1.0.2:8012"}}) // not the first
	if !thr.Routable(rev) {
		t.Fatal("the tap did not hand the pod to the throttler")
	}
	if tl := req.FirstByte("10.1.0.1:8012"); !tl.PodReady.Equal(ready) {
		t.Fatalf("PodReady = %v, want %v", tl.PodReady, ready)
	}
	if tr.Arrive(context.Background(), rev) != nil {
		t.Fatal("request after the pod is ready is cold")
	}
}
