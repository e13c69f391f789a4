package scraper

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
)

// The scraper plugs into the collector's seam: a tick scrapes the pods and
// the revision total (minus proxied) lands in the windows.
func TestWithCollector(t *testing.T) {
	e := newEnv(t, concPod("a", 2*window, 3), concPod("b", 2*window, 5))
	c := collector.New(collector.Options{Clock: e.clock, Logger: zaptest.NewLogger(t).Sugar(), Scrapers: e.f.New})
	t.Cleanup(c.Close)
	k := types.NamespacedName{Namespace: ns, Name: rev}
	if err := c.CreateOrUpdate(k, collector.Config{StableWindow: window, PanicWindow: 6 * time.Second,
		ScrapeTarget: rev + "-private"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.StableAndPanicConcurrency(k, e.clock.Now()); !errors.Is(err, collector.ErrNoData) {
		t.Fatalf("before a scrape: err = %v, want ErrNoData", err)
	}
	// One tick: exactly one scrape lands in this second's bucket.
	testutil.StepWhenWaiting(t, e.clock, time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, _, err := c.StableAndPanicConcurrency(k, e.clock.Now()); err == nil {
			if st != 8 {
				t.Fatalf("stable concurrency = %v, want 8", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scrape recorded")
		}
		time.Sleep(time.Millisecond)
	}
}
