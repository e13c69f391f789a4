package replay

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Dispatch calls fire(i, late) for every arrival i at start+At on clk, each
// in its own goroutine, at most maxInflight at once, and returns when every
// call has returned. late is how far behind its time the call started (the
// bound on goroutines, or a slow machine). When ctx ends no further call
// starts; the calls in flight get ctx to end on.
func Dispatch(ctx context.Context, clk clock.Clock, start time.Time, arrivals []Arrival, maxInflight int,
	fire func(ctx context.Context, i int, late time.Duration)) error {
	if maxInflight <= 0 {
		maxInflight = 1
	}
	sem := make(chan struct{}, maxInflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, a := range arrivals {
		if d := start.Add(a.At).Sub(clk.Now()); d > 0 {
			t := clk.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C():
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case sem <- struct{}{}:
		}
		late := max(clk.Since(start.Add(a.At)), 0)
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fire(ctx, i, late)
		}()
	}
	return nil
}
