package throttler

import (
	"math"
	"slices"
)

// unlimited is the capacity reported for revisions without a limit.
const unlimited = math.MaxInt32

// subsetRange returns which of n sorted pods the activator at index idx of
// numAct takes: the contiguous slice [begin,end) plus, when the pods do not
// divide evenly, the extra pod at index extra (-1 if none). The n%numAct
// remnant pods at the tail go one each to activators 0..r-1, so every pod is
// assigned exactly once whenever n >= numAct. With fewer pods than
// activators, activators share pods round robin (idx % n). idx -1 (this
// activator is not in the revision's public Endpoints yet) or a single
// activator or pod takes everything. This matches upstream's assignment so
// that mixed fleets agree on who owns which pod.
func subsetRange(n, idx, numAct int) (begin, end, extra int) {
	if idx < 0 || n <= 1 || numAct <= 1 {
		return 0, n, -1
	}
	if numAct > n {
		b := idx % n
		return b, b + 1, -1
	}
	size := n / numAct
	begin, end = idx*size, idx*size+size
	extra = -1
	if rem := n % numAct; rem > 0 && idx < rem {
		extra = n - rem + idx
	}
	return begin, end, extra
}

// assign appends to dst the pods of sorted that this activator takes.
func assign(dst, sorted []*pod, idx, numAct int) []*pod {
	b, e, x := subsetRange(len(sorted), idx, numAct)
	dst = append(dst, sorted[b:e]...)
	if x >= 0 {
		dst = append(dst, sorted[x])
	}
	return dst
}

// capacity is the number of requests this activator may have in flight for
// a revision. cc is the containerConcurrency (0 = unlimited), assigned the
// pods this activator routes to directly, backends the ready pods (only
// used with ClusterIP routing, where the pods are shared by numAct
// activators). No destination at all means capacity 0: requests wait.
func capacity(cc, assigned, backends, numAct int, clusterIP bool) int {
	if clusterIP {
		backends = max(backends, 1)
		if cc == 0 {
			return unlimited
		}
		return clamp(max(1, cc*backends/max(1, numAct)))
	}
	if assigned == 0 {
		return 0
	}
	if cc == 0 {
		return unlimited
	}
	return clamp(cc * assigned)
}

func clamp(c int) int { return min(c, unlimited) }

// activatorIndex returns this activator's position among the sorted,
// deduplicated activator IPs and their count; -1 if podIP is absent.
func activatorIndex(ips []string, podIP string) (idx, n int) {
	s := slices.Clone(ips)
	slices.Sort(s)
	s = slices.Compact(s)
	i, found := slices.BinarySearch(s, podIP)
	if !found || podIP == "" {
		return -1, len(s)
	}
	return i, len(s)
}
