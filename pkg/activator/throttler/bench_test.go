package throttler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"
	"knative.dev/serving/pkg/queue"
)

// benchCases: CC and how many goroutines per CPU compete. With 10 pods the
// high-parallelism CC=1 case queues most of the time.
var benchCases = []struct {
	cc, parallelism int
}{
	{cc: 0, parallelism: 1},
	{cc: 1, parallelism: 1},
	{cc: 10, parallelism: 1},
	{cc: 1, parallelism: 50},
	{cc: 10, parallelism: 50},
}

func BenchmarkThawTry(b *testing.B) {
	noop := func(string) error { return nil }
	b.Run("sequential", func(b *testing.B) {
		th := New("10.0.0.1", Options{}, clock.RealClock{}, zap.NewNop().Sugar())
		th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 10})
		th.UpdateBackends(rev, Backends{Dests: dests(10)})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := th.Try(ctx, rev, noop); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range benchCases {
		b.Run(fmt.Sprintf("parallel/cc=%d/p=%d", bc.cc, bc.parallelism), func(b *testing.B) {
			th := New("10.0.0.1", Options{}, clock.RealClock{}, zap.NewNop().Sugar())
			th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: bc.cc})
			th.UpdateBackends(rev, Backends{Dests: dests(10)})
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(bc.parallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := th.Try(ctx, rev, noop); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("rejected", func(b *testing.B) {
		th := New("10.0.0.1", Options{QueueDepth: 1}, clock.RealClock{}, zap.NewNop().Sugar())
		th.UpsertRevision(rev, RevisionConfig{ContainerConcurrency: 1})
		th.UpdateBackends(rev, Backends{Dests: dests(1)})
		hold := make(chan struct{})
		entered := make(chan struct{})
		go th.Try(context.Background(), rev, func(string) error { close(entered); <-hold; return nil })
		<-entered
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		go th.Try(ctx, rev, func(string) error { return nil })
		for q, _ := th.Stats(rev); q != 1; q, _ = th.Stats(rev) {
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := th.Try(ctx, rev, noop); err != ErrQueueFull {
					b.Error(err)
					return
				}
			}
		})
		close(hold)
	})
}

// Upstream's revision-level breaker alone: a lower bound on the cost of
// upstream's Throttler, which adds an LB policy and a per-pod breaker.
func BenchmarkUpstreamBreaker(b *testing.B) {
	thunk := func() {}
	b.Run("sequential", func(b *testing.B) {
		br := queue.NewBreaker(queue.BreakerParams{QueueDepth: 10000, MaxConcurrency: 100, InitialCapacity: 100})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := br.Maybe(ctx, thunk); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range benchCases {
		if bc.cc == 0 {
			continue
		}
		b.Run(fmt.Sprintf("parallel/cc=%d/p=%d", bc.cc, bc.parallelism), func(b *testing.B) {
			br := queue.NewBreaker(queue.BreakerParams{QueueDepth: 10000, MaxConcurrency: bc.cc * 10, InitialCapacity: bc.cc * 10})
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(bc.parallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := br.Maybe(ctx, thunk); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
