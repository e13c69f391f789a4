package keepalive

import (
	"reflect"
	"testing"
	"time"
)

func costConfig(cost time.Duration, share float64) Config {
	c := DefaultConfig()
	c.ColdStartCost, c.ColdStartShare = cost, share
	c.MinHold = 90 * time.Second
	return c
}

func TestLeastCost(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		idles []time.Duration
		want  Windows
	}{{
		// Idle times of 10 min 20 s: a pod from 10 min to 11 min catches
		// each for 20 s of idle pod time, far cheaper than a cold start.
		name:  "periodic: a pre-warm window around the period",
		cfg:   costConfig(10*time.Minute, 0),
		idles: repeat(10*time.Minute+20*time.Second, 20),
		want:  Windows{Mode: ModeCost, PreWarm: 10 * time.Minute, KeepAlive: time.Minute},
	}, {
		name:  "idle times within the hold: nothing beyond it",
		cfg:   costConfig(10*time.Minute, 0),
		idles: repeat(30*time.Second, 20),
		want:  Windows{Mode: ModeCost},
	}, {
		// The bin that holds the end of the hold (60-120 s) counts as
		// cold unless kept: keep to its end.
		name:  "idle times just past the hold",
		cfg:   costConfig(10*time.Minute, 0),
		idles: repeat(100*time.Second, 20),
		want:  Windows{Mode: ModeCost, KeepAlive: 2 * time.Minute},
	}, {
		// One idle time in each minute from 2 h to 2 h 20, a cold start
		// worth 10 minutes: a pod over the last 10 minutes costs 50 minutes
		// of idle pod time and 10 cold starts (150 in all), less than 20
		// cold starts (200) or any other window.
		name: "rare and spread: pre-warm for the later half",
		cfg:  costConfig(10*time.Minute, 0),
		idles: func() []time.Duration {
			var out []time.Duration
			for i := range 20 {
				out = append(out, 2*time.Hour+time.Duration(i)*time.Minute)
			}
			return out
		}(),
		want: Windows{Mode: ModeCost, PreWarm: 130 * time.Minute, KeepAlive: 10 * time.Minute},
	}, {
		// The same, but a cold start weighs four request intervals (about
		// 8.5 h here): worth keeping a pod over the spread.
		name: "rare and spread, weighed by rarity: pre-warm over the spread",
		cfg:  costConfig(0, 4),
		idles: func() []time.Duration {
			var out []time.Duration
			for i := range 20 {
				out = append(out, 2*time.Hour+time.Duration(i)*time.Minute)
			}
			return out
		}(),
		want: Windows{Mode: ModeCost, PreWarm: 2 * time.Hour, KeepAlive: 20 * time.Minute},
	}, {
		name:  "too few idle times: the fallback",
		cfg:   costConfig(10*time.Minute, 0),
		idles: repeat(10*time.Minute, 3),
		want:  Windows{Mode: ModeFallback, KeepAlive: 10 * time.Minute},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, clk := newPolicy(t, tc.cfg)
			feed(p, clk, time.Second, tc.idles...)
			if got := p.Windows(); got != tc.want {
				t.Errorf("windows %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestArrivals(t *testing.T) {
	p, clk := newPolicy(t, DefaultConfig())
	p.Arrivals(0) // nothing
	if p.IsBusy() {
		t.Fatal("busy after no arrivals")
	}
	p.Arrivals(3)
	clk.Step(time.Minute)
	p.Arrivals(2) // busy still: no idle time
	p.Idle()
	clk.Step(5 * time.Minute)
	p.Arrivals(1)
	s := p.Snapshot()
	if s.Requests != 6 || !reflect.DeepEqual(s.Counts, [][2]uint32{{5, 1}}) || s.FirstUnixMs != t0.UnixMilli() {
		t.Errorf("state %+v: want 6 requests from t0 and one idle time of 5 min", s)
	}
	q, _ := newPolicy(t, DefaultConfig())
	if err := q.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := q.Snapshot(); !reflect.DeepEqual(got, s) {
		t.Errorf("restored %+v, want %+v", got, s)
	}
}
