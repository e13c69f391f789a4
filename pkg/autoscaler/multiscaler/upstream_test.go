package multiscaler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktest "k8s.io/utils/clock/testing"

	"knative.dev/serving/pkg/autoscaler/scaling"
)

// idleScaler is a UniScaler that never has data, so upstream's runner never
// changes the status it was created with.
type idleScaler struct{}

func (idleScaler) Scale(*zap.SugaredLogger, time.Time) scaling.ScaleResult {
	return scaling.ScaleResult{}
}
func (idleScaler) Update(*scaling.DeciderSpec) {}
func (idleScaler) OnDelete()                   {}

// TestDifferentialInitialStatus compares the status of a new decider
// (desired −1, the initial excess burst capacity) with upstream's Create.
func TestDifferentialInitialStatus(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	up := scaling.NewMultiScaler(stop, func(*scaling.Decider) (scaling.UniScaler, error) { return idleScaler{}, nil },
		zap.NewNop().Sugar())
	src := newSource()
	ms := New(Options{Clock: clocktest.NewFakeClock(time.Unix(1_700_000_000, 0)), Metrics: src, Pods: src})
	r := rand.New(rand.NewPCG(9, 9))
	for i := range 2000 {
		s := spec
		s.TargetBurstCapacity = []float64{-1, 0, 200, float64(r.IntN(1000)), r.Float64() * 500, 1e12}[r.IntN(6)]
		s.InitialScale = int32(r.IntN(20))
		s.TotalValue = []float64{100, 1, r.Float64() * 1000}[r.IntN(3)]
		key := types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("rev-%d", i)}
		got := ms.Create(key, s, Labels{})
		d, err := up.Create(context.Background(), &scaling.Decider{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			Spec: scaling.DeciderSpec{TargetBurstCapacity: s.TargetBurstCapacity, InitialScale: s.InitialScale,
				TotalValue: s.TotalValue},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.DesiredScale != d.Status.DesiredScale || got.ExcessBurstCapacity != d.Status.ExcessBurstCapacity {
			t.Fatalf("spec tbc=%v init=%d total=%v: thaw %+v, upstream %+v", s.TargetBurstCapacity, s.InitialScale, s.TotalValue, got, d.Status)
		}
		up.Delete(context.Background(), key.Namespace, key.Name)
		ms.Delete(key)
	}
}
