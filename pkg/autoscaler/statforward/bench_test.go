package statforward

import (
	"context"
	"sort"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/autoscaler/statserver"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// BenchmarkForwardedPoke is the hop a poke takes when the activator's websocket landed on a replica
// that does not hold the revision's bucket: Forward on the receiving replica → the peer link → the
// holder's stat server → its peer channel. It reports the latency quantiles of that hop, which is
// what forwarding adds to request → /scale.
func BenchmarkForwardedPoke(b *testing.B) {
	activator, peer := make(chan wire.StatMessage, 1), make(chan wire.StatMessage, 1)
	s := statserver.New("unused", activator, statserver.Options{PeerSubprotocol: Subprotocol, PeerOut: peer},
		clock.RealClock{}, zap.NewNop().Sugar())
	addr := serve(b, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := New(ctx, Options{SelfIP: "10.0.0.1"})
	defer f.Close()
	f.SetPeers([]string{addr})
	sm := stat(theirs, 1)
	// Warm the connection.
	f.Forward(sm)
	<-peer
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		f.Forward(sm)
		<-peer
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}
