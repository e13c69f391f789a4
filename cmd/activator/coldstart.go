package main

import (
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator/endpoints"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
	"github.com/thaw-dev/thaw/pkg/coldstart"
)

// podReadyTap sits between the endpoints manager and the throttler and
// tells the cold-start tracker when a revision gets a routable pod. The
// time is taken before the throttler sees the pod, because the throttler
// hands it to the waiting requests at once and their first byte can come
// before UpdateBackends returns.
type podReadyTap struct {
	*throttler.Throttler
	tracker *coldstart.Tracker
	clk     clock.PassiveClock
}

var _ endpoints.BackendSink = podReadyTap{}

func (p podReadyTap) UpdateBackends(rev types.NamespacedName, b throttler.Backends) {
	if len(b.Dests) > 0 || b.ClusterIPDest != "" {
		// A no-op unless rev has an open cold start whose pod is not yet ready.
		p.tracker.PodReady(rev, p.clk.Now())
	}
	p.Throttler.UpdateBackends(rev, b)
}
