package sim

import (
	"math"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
)

// listWorkload replays fixed requests.
type listWorkload struct {
	reqs    []Request
	i       int
	horizon time.Duration
}

func (l *listWorkload) Next() (Request, bool) {
	if l.i >= len(l.reqs) {
		return Request{}, false
	}
	l.i++
	return l.reqs[l.i-1], true
}
func (l *listWorkload) Reset()                 { l.i = 0 }
func (l *listWorkload) Horizon() time.Duration { return l.horizon }
func (l *listWorkload) Count() int             { return len(l.reqs) }

func periodic(first, every, dur time.Duration, n int, horizon time.Duration) *listWorkload {
	w := &listWorkload{horizon: horizon}
	for i := range n {
		w.reqs = append(w.reqs, Request{At: first + time.Duration(i)*every, Duration: dur})
	}
	return w
}

var model = Model{ColdStart: time.Second}

func TestSingleRequest(t *testing.T) {
	// One request at 10 s for 0.5 s: a cold start of 1 s; the pod is ready
	// at 11 s and serves until 11.5 s.
	w := periodic(10*time.Second, 0, 500*time.Millisecond, 1, time.Hour)
	tests := []struct {
		pol Policy
		// the pod is gone this long after it became ready, within a tick
		podFor time.Duration
	}{
		// The decider wants 0 once the stable window no longer holds the
		// request's seconds (~60 s after it), the PA turns inactive then
		// (it was active for a window), and the pod goes after the grace.
		{Upstream(), 90 * time.Second},
		{Fixed(time.Minute), 120 * time.Second},
		{Fixed(10 * time.Minute), 660 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.pol.Name, func(t *testing.T) {
			res, err := Run(w, tc.pol, model)
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != 1 || res.ColdRequests != 1 || res.ColdStarts != 1 || res.AddedLatency != time.Second {
				t.Errorf("result %+v: want one cold request waiting 1 s", res)
			}
			if math.Abs(res.PodSeconds-tc.podFor.Seconds()) > 2*TickInterval.Seconds() {
				t.Errorf("pod lived %.1f s, want about %v", res.PodSeconds, tc.podFor)
			}
			if d := res.PodSeconds - res.IdlePodSeconds; math.Abs(d-0.5) > 1e-9 {
				t.Errorf("busy pod time %.3f s, want 0.5", d)
			}
		})
	}
}

func TestPeriodic(t *testing.T) {
	// Every 10 minutes for a day: upstream's pod is gone each time; a
	// fixed 10-minute retention keeps it (60 s + 10 min > 10 min); the
	// learned policy pre-warms once it has seen enough idle times.
	w := periodic(0, 10*time.Minute, 200*time.Millisecond, 144, 24*time.Hour)
	res := map[string]Result{}
	for _, pol := range []Policy{Upstream(), Fixed(5 * time.Minute), Fixed(10 * time.Minute), Learned("learned", keepalive.PaperConfig()), Learned("cost", keepalive.DefaultConfig())} {
		r, err := Run(w, pol, model)
		if err != nil {
			t.Fatal(err)
		}
		res[pol.Name] = r
	}
	if r := res["upstream"]; r.ColdRequests != 144 || r.ColdStarts != 144 {
		t.Errorf("upstream %+v: want every request cold", r)
	}
	if r := res["fixed-5m"]; r.ColdRequests != 144 {
		t.Errorf("fixed-5m %+v: want every request cold (6 min < 10 min)", r)
	}
	if r := res["fixed-10m"]; r.ColdRequests != 1 {
		t.Errorf("fixed-10m %+v: want only the first request cold", r)
	}
	l := res["learned"]
	// The first request and the fallback's (10 min keep-alive, applied
	// after the grace) warm ones teach it; then every request finds a
	// pre-warmed pod.
	if l.ColdRequests > 2 || l.PreWarms < 130 || l.FinalMode != "histogram" {
		t.Errorf("learned %+v: want at most 2 cold requests and pre-warms for the rest", l)
	}
	if l.IdlePodSeconds >= res["fixed-10m"].IdlePodSeconds/2 {
		t.Errorf("learned idle %.0f pod-s, fixed-10m %.0f: want under half", l.IdlePodSeconds, res["fixed-10m"].IdlePodSeconds)
	}
	// A pre-warm starts a cold start ahead: only the first request waits.
	if l.AddedLatency != time.Second {
		t.Errorf("learned waited %v in all, want the first request's 1s", l.AddedLatency)
	}
	c := res["cost"]
	if c.ColdRequests > 6 || c.PreWarms < 130 || c.FinalMode != "cost" || c.IdlePodSeconds >= l.IdlePodSeconds {
		t.Errorf("cost %+v: want a few cold requests, pre-warms for the rest, less idle time than the paper's %.0f", c, l.IdlePodSeconds)
	}
	t.Logf("cost %+v", c)
	t.Logf("upstream %+v", res["upstream"])
	t.Logf("fixed-10m %+v", res["fixed-10m"])
	t.Logf("learned %+v", l)
}

func TestBusyFunctionScalesOut(t *testing.T) {
	// 50 requests a second of 4 s each: concurrency 200, target 70 per pod.
	w := periodic(0, 20*time.Millisecond, 4*time.Second, 50*600, 15*time.Minute)
	res, err := Run(w, Upstream(), model)
	if err != nil {
		t.Fatal(err)
	}
	if res.ColdStarts != 1 {
		t.Errorf("%d cold starts, want 1", res.ColdStarts)
	}
	// Within the run the decider asks for ceil(200/70) = 3 pods.
	if avg := res.PodSeconds / 600; avg < 2.5 || avg > 4 {
		t.Errorf("%.1f pods on average, want about 3", avg)
	}
}

func TestProxyFastPath(t *testing.T) {
	// With the activator in the path for longer than the grace, upstream's
	// KPA drops the last pod once the revision is inactive: no grace, but
	// the retention still holds.
	w := periodic(10*time.Second, 0, 500*time.Millisecond, 1, time.Hour)
	fast := Model{ColdStart: time.Second, ProxyFastPath: true}
	tests := []struct {
		pol    Policy
		podFor time.Duration
	}{
		{Upstream(), 60 * time.Second},
		{Fixed(time.Minute), 120 * time.Second},
	}
	for _, tc := range tests {
		res, err := Run(w, tc.pol, fast)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(res.PodSeconds-tc.podFor.Seconds()) > 2*TickInterval.Seconds() {
			t.Errorf("%s: pod lived %.1f s, want about %v", tc.pol.Name, res.PodSeconds, tc.podFor)
		}
	}
}

func TestColdStartAt(t *testing.T) {
	// Two requests 200 s apart: the pod is gone in between under upstream's
	// policy, so each starts a pod. The cluster takes 30 s to start a pod
	// in the first 100 s of the run and 2 s after that: each request waits
	// the cold-start time of its own moment, not one median.
	w := &listWorkload{horizon: time.Hour, reqs: []Request{
		{At: 10 * time.Second, Duration: 100 * time.Millisecond},
		{At: 210 * time.Second, Duration: 100 * time.Millisecond},
	}}
	m := Model{ColdStart: time.Hour, ColdStartAt: func(at time.Duration) time.Duration {
		if at < 100*time.Second {
			return 30 * time.Second
		}
		return 2 * time.Second
	}}
	res, err := Run(w, Upstream(), m)
	if err != nil {
		t.Fatal(err)
	}
	if res.ColdStarts != 2 || res.AddedLatency != 32*time.Second || res.MaxAddedLatency != 30*time.Second {
		t.Errorf("result %+v: want two cold starts waiting 30 s and 2 s", res)
	}
}

func TestColdStartAtOrder(t *testing.T) {
	// A scale-up made later that the cluster serves sooner is ready first:
	// the starting pods stay ordered by their ready times. A burst scales a
	// revision out at a slow moment of the cluster, then again at a fast one.
	var reqs []Request
	for i := range 300 {
		reqs = append(reqs, Request{At: time.Duration(i) * 10 * time.Millisecond, Duration: 20 * time.Second})
	}
	w := &listWorkload{horizon: 10 * time.Minute, reqs: reqs}
	m := Model{ColdStartAt: func(at time.Duration) time.Duration {
		if at < 3*time.Second {
			return 40 * time.Second
		}
		return time.Second
	}}
	res, err := Run(w, Upstream(), m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 300 || res.ColdStarts != 1 {
		t.Errorf("result %+v", res)
	}
	// The requests waited for the first pod ready: 40 s after the first
	// scale-up unless a later, faster one was ready before.
	if res.MaxAddedLatency >= 40*time.Second {
		t.Errorf("longest wait %v: the later, faster scale-up's pod was not used first", res.MaxAddedLatency)
	}
}
