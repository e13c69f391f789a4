package collector

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	clocktest "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// chanScraper hands out one scripted result per Scrape, so the test knows
// the previous scrape's iteration (callback included) has finished when the
// next result is taken.
type chanScraper struct {
	results chan func() error
	// seen receives, at the start of each scrape, the callbacks counted
	// so far: all of them belong to earlier scrapes.
	seen  chan int32
	count func() int32
}

func (s *chanScraper) Scrape(ctx context.Context, _ time.Duration) (wire.Stat, error) {
	s.seen <- s.count()
	select {
	case <-ctx.Done():
		return wire.Stat{}, ctx.Err()
	case f := <-s.results:
		return wire.Stat{}, f()
	}
}

// TestOnChangeComparesErrorText checks that a revision failing the same way
// every scrape tells the watcher once, although each scrape wraps a fresh
// error value, and that a new message or a recovery tells it again.
func TestOnChangeComparesErrorText(t *testing.T) {
	sentinel := errors.New("pods exhausted")
	// Each step returns a new error value, as the scraper does.
	wrapped := func(msg string) func() error {
		return func() error { return fmt.Errorf("%w: %s", sentinel, msg) }
	}
	ok := func() error { return nil }
	steps := []struct {
		name    string
		result  func() error
		changed bool
	}{
		{"first success", ok, false},
		{"first failure", wrapped("no pod answered"), true},
		{"same failure, new value", wrapped("no pod answered"), false},
		{"same failure again", wrapped("no pod answered"), false},
		{"different message", wrapped("too few pods answered for a sample of 3"), true},
		{"same different message", wrapped("too few pods answered for a sample of 3"), false},
		{"recovered", ok, true},
		{"still fine", ok, false},
	}

	clk := clocktest.NewFakeClock(time.Unix(1_700_000_000, 0))
	var calls atomic.Int32
	sc := &chanScraper{results: make(chan func() error), seen: make(chan int32, len(steps)+2), count: calls.Load}
	c := New(Options{
		Clock:    clk,
		Logger:   zaptest.NewLogger(t).Sugar(),
		Scrapers: func(types.NamespacedName, Config) (Scraper, error) { return sc, nil },
	})
	c.Watch(func(k types.NamespacedName) {
		if k == key {
			calls.Add(1)
		}
	})
	t.Cleanup(c.Close)
	if err := c.CreateOrUpdate(key, Config{StableWindow: time.Minute, PanicWindow: 6 * time.Second, ScrapeTarget: "rev-private"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the scrape loop's ticker", clk.HasWaiters)
	// feed lets the scrape loop run one scrape with result f and returns
	// the callbacks counted before that scrape started.
	feed := func(f func() error) int32 {
		clk.Step(ScrapeInterval)
		select {
		case sc.results <- f:
		case <-time.After(5 * time.Second):
			t.Fatal("scrape loop did not scrape")
		}
		return <-sc.seen
	}
	feed(steps[0].result)
	want := int32(0)
	for i, st := range steps {
		next := ok
		if i+1 < len(steps) {
			next = steps[i+1].result
		}
		got := feed(next) // counted before the next scrape: step i included
		if st.changed {
			want++
		}
		if got != want {
			t.Fatalf("after %q: OnChange called %d times, want %d", st.name, got, want)
		}
	}
}
