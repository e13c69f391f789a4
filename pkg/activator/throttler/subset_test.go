package throttler

import (
	"fmt"
	"testing"
)

// Cases derived by hand from upstream's pickIndices/assignSlice
// (pkg/activator/net/throttler.go, v0.50.0); sorted pods are 0..n-1.
func TestSubsetAssignment(t *testing.T) {
	tests := []struct {
		n, idx, numAct int
		want           []int
	}{
		{n: 0, idx: 0, numAct: 3, want: nil},
		{n: 1, idx: 2, numAct: 3, want: []int{0}},              // single pod: everyone takes it
		{n: 5, idx: -1, numAct: 3, want: []int{0, 1, 2, 3, 4}}, // not in public endpoints
		{n: 5, idx: 0, numAct: 1, want: []int{0, 1, 2, 3, 4}},
		{n: 5, idx: 0, numAct: 0, want: []int{0, 1, 2, 3, 4}},
		{n: 6, idx: 0, numAct: 3, want: []int{0, 1}},
		{n: 6, idx: 1, numAct: 3, want: []int{2, 3}},
		{n: 6, idx: 2, numAct: 3, want: []int{4, 5}},
		// 20 pods, 3 activators: slices of 6, remnants 18 and 19 go to 0 and 1.
		{n: 20, idx: 0, numAct: 3, want: []int{0, 1, 2, 3, 4, 5, 18}},
		{n: 20, idx: 1, numAct: 3, want: []int{6, 7, 8, 9, 10, 11, 19}},
		{n: 20, idx: 2, numAct: 3, want: []int{12, 13, 14, 15, 16, 17}},
		// 24 pods, 5 activators: slices of 4, remnants 20..23 to activators 0..3.
		{n: 24, idx: 3, numAct: 5, want: []int{12, 13, 14, 15, 23}},
		{n: 24, idx: 4, numAct: 5, want: []int{16, 17, 18, 19}},
		// Fewer pods than activators: round robin by index.
		{n: 3, idx: 3, numAct: 5, want: []int{0}},
		{n: 3, idx: 4, numAct: 5, want: []int{1}},
		{n: 2, idx: 1, numAct: 5, want: []int{1}},
		{n: 4, idx: 0, numAct: 4, want: []int{0}},
		{n: 5, idx: 3, numAct: 4, want: []int{3}},
		{n: 5, idx: 0, numAct: 4, want: []int{0, 4}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("n=%d/idx=%d/act=%d", tc.n, tc.idx, tc.numAct), func(t *testing.T) {
			pods := make([]*pod, tc.n)
			for i := range pods {
				pods[i] = &pod{dest: fmt.Sprint(i)}
			}
			got := assign(nil, pods, tc.idx, tc.numAct)
			var gi []int
			for _, p := range got {
				var i int
				fmt.Sscan(p.dest, &i)
				gi = append(gi, i)
			}
			if fmt.Sprint(gi) != fmt.Sprint(tc.want) {
				t.Errorf("assign = %v, want %v", gi, tc.want)
			}
		})
	}
}

// Every pod belongs to exactly one activator when there are at least as
// many pods as activators.
func TestSubsetPartitions(t *testing.T) {
	for numAct := 1; numAct <= 7; numAct++ {
		for n := numAct; n <= 40; n++ {
			seen := make([]int, n)
			for idx := range numAct {
				b, e, x := subsetRange(n, idx, numAct)
				for i := b; i < e; i++ {
					seen[i]++
				}
				if x >= 0 {
					seen[x]++
				}
			}
			for i, c := range seen {
				if c != 1 {
					t.Fatalf("n=%d act=%d: pod %d assigned %d times", n, numAct, i, c)
				}
			}
		}
	}
}

func TestCapacity(t *testing.T) {
	tests := []struct {
		name                           string
		cc, assigned, backends, numAct int
		clusterIP                      bool
		want                           int
	}{
		{name: "no pods", cc: 5, want: 0},
		{name: "cc0 no pods", cc: 0, want: 0},
		{name: "cc0 pods", cc: 0, assigned: 3, want: unlimited},
		{name: "cc1 x 10", cc: 1, assigned: 10, want: 10},
		{name: "cc10 x 3", cc: 10, assigned: 3, want: 30},
		{name: "huge clamps", cc: 1 << 30, assigned: 4, want: unlimited},
		{name: "clusterIP cc0", cc: 0, backends: 2, clusterIP: true, want: unlimited},
		{name: "clusterIP 10x5/2", cc: 10, backends: 5, numAct: 2, clusterIP: true, want: 25},
		{name: "clusterIP 1x2/3 at least 1", cc: 1, backends: 2, numAct: 3, clusterIP: true, want: 1},
		{name: "clusterIP unknown activators", cc: 3, backends: 4, clusterIP: true, want: 12},
		{name: "clusterIP without counted pods", cc: 3, backends: 0, numAct: 1, clusterIP: true, want: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := capacity(tc.cc, tc.assigned, tc.backends, tc.numAct, tc.clusterIP); got != tc.want {
				t.Errorf("capacity = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestActivatorIndex(t *testing.T) {
	tests := []struct {
		ips         []string
		self        string
		idx, numAct int
	}{
		{ips: nil, self: "10.0.0.1", idx: -1, numAct: 0},
		{ips: []string{"10.0.0.1"}, self: "10.0.0.1", idx: 0, numAct: 1},
		{ips: []string{"10.0.0.3", "10.0.0.1", "10.0.0.2"}, self: "10.0.0.2", idx: 1, numAct: 3},
		// String order, as upstream: "10.0.0.10" sorts before "10.0.0.9".
		{ips: []string{"10.0.0.9", "10.0.0.10"}, self: "10.0.0.9", idx: 1, numAct: 2},
		{ips: []string{"10.0.0.2", "10.0.0.2", "10.0.0.1"}, self: "10.0.0.2", idx: 1, numAct: 2},
		{ips: []string{"10.0.0.1", "10.0.0.3"}, self: "10.0.0.2", idx: -1, numAct: 2},
		{ips: []string{"10.0.0.1"}, self: "", idx: -1, numAct: 1},
	}
	for _, tc := range tests {
		idx, n := activatorIndex(tc.ips, tc.self)
		if idx != tc.idx || n != tc.numAct {
			t.Errorf("activatorIndex(%v, %q) = %d/%d, want %d/%d", tc.ips, tc.self, idx, n, tc.idx, tc.numAct)
		}
	}
}
