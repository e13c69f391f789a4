// Package report accounts for every request of a chaos run: which phase of the scenario it fell in
// (before, during or after the faults), whether it was lost and how, the success ratio against the
// scenario's SLO, and for autoscaler kills how far each PodAutoscaler's desired scale moved and how
// long each bucket stayed without a holder. It writes the CSV, JSON, a timeline plot and the
// Thaw/upstream table.
package report

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/load"
)

// Phases of a scenario.
const (
	Before = "before"
	During = "during"
	After  = "after"
)

// DeviationWindow is how long after a kill the desired scale is watched for a move.
const DeviationWindow = 60 * time.Second

// ScaleSample is one PodAutoscaler's status at one time.
type ScaleSample struct {
	Time    time.Time `json:"time"`
	PA      string    `json:"pa"`
	Desired int64     `json:"desired"`
	Actual  int64     `json:"actual"`
}

// LeaseSample is one bucket Lease at one time.
type LeaseSample struct {
	Time   time.Time `json:"time"`
	Lease  string    `json:"lease"`
	Holder string    `json:"holder"`
	Renew  time.Time `json:"renew"`
}

// Run is one scenario on one side, as recorded.
type Run struct {
	Side     string  `json:"side"`
	Scenario string  `json:"scenario"`
	SLO      float64 `json:"slo"`
	// Start and End bound the loads; FaultStart and FaultEnd the fault schedule.
	Start      time.Time `json:"start"`
	FaultStart time.Time `json:"fault_start"`
	FaultEnd   time.Time `json:"fault_end"`
	End        time.Time `json:"end"`
	// Steady is the PodAutoscaler of the steady service: the one whose desired scale should not move.
	Steady string `json:"steady_pa"`
	// Doomed is the service the fault keeps from starting (never-ready): its failures from the fault's
	// start until it serves again after the undo are expected, counted apart, never as lost.
	Doomed   string         `json:"doomed,omitempty"`
	Outcomes []load.Outcome `json:"-"`
	Marks    []fault.Mark   `json:"marks"`
	Scale    []ScaleSample  `json:"-"`
	Leases   []LeaseSample  `json:"-"`
	Err      string         `json:"error,omitempty"`
	Summary  Summary        `json:"summary"`
}

// Phase names the phase a request sent at t fell in.
func (r *Run) Phase(t time.Time) string {
	switch {
	case r.FaultStart.IsZero() || t.Before(r.FaultStart):
		return Before
	case r.FaultEnd.IsZero() || t.Before(r.FaultEnd):
		return During
	}
	return After
}

// Count is requests and lost requests.
type Count struct {
	Total  int `json:"total"`
	Failed int `json:"failed"`
}

func (c *Count) add(o load.Outcome) {
	c.Total++
	if o.Failed() {
		c.Failed++
	}
}

// Ratio is the success ratio (1 without requests).
func (c Count) Ratio() float64 {
	if c.Total == 0 {
		return 1
	}
	return float64(c.Total-c.Failed) / float64(c.Total)
}

// Kill is one injected fault's aftermath.
type Kill struct {
	Time   time.Time `json:"time"`
	Target string    `json:"target"`
	// Deviation is the largest |desired − desired before the kill| of the steady PodAutoscaler in
	// DeviationWindow after it.
	Deviation int64 `json:"max_desired_deviation"`
	// Buckets the killed pod held, and HandOff the time from the kill to the last of them being
	// renewed again (by a new holder or the restarted one); -1 when one was not renewed in the record.
	Buckets int           `json:"buckets,omitempty"`
	HandOff time.Duration `json:"handoff_ns,omitempty"`
}

// Summary is a run's figures.
type Summary struct {
	All      Count            `json:"all"`
	Exposed  Count            `json:"exposed"` // during and after the faults: what the SLO is checked on
	Phases   map[string]Count `json:"phases"`
	Streams  map[string]Count `json:"streams"`
	Classes  map[string]int   `json:"classes"`
	MeetsSLO bool             `json:"meets_slo"`
	// Hops counts the lost requests by the hop that answered (load.Hop).
	Hops map[string]int `json:"hops"`
	// Expected counts the requests to the doomed service inside its window, apart from the others;
	// ExpectedClasses their failures by class, ExpectedP50 the failures' median latency (a clear
	// failure is fast), and Recovery the time from the fault's undo to its first success (-1: none).
	Expected        Count          `json:"expected"`
	ExpectedClasses map[string]int `json:"expected_classes,omitempty"`
	ExpectedP50     time.Duration  `json:"expected_failure_latency_p50_ns,omitempty"`
	Recovery        time.Duration  `json:"recovery_ns,omitempty"`
	Kills           []Kill         `json:"kills,omitempty"`
	MaxDeviation    int64          `json:"max_desired_deviation"`
	HandOffP50      time.Duration  `json:"handoff_p50_ns"`
	HandOffMax      time.Duration  `json:"handoff_max_ns"`
	Injections      int            `json:"injections"`
}

// doomedWindow is when the doomed service's failures are expected: from the fault's start until its
// first success sent after the last undo (the end of the run when there is none).
func (r *Run) doomedWindow() (from, until time.Time, recovery time.Duration) {
	if r.Doomed == "" || r.FaultStart.IsZero() {
		return time.Time{}, time.Time{}, 0
	}
	// Healed at the last undo (the schedule may wait out its duration after it), else at its end.
	var healed time.Time
	for _, m := range r.Marks {
		if m.Kind == "undo" && m.Time.After(healed) {
			healed = m.Time
		}
	}
	if healed.IsZero() {
		healed = r.FaultEnd
	}
	until = r.End.Add(time.Nanosecond)
	recovery = -1
	for _, o := range r.Outcomes {
		if o.Target == r.Doomed && !o.Failed() && !o.Send.Before(healed) && o.Send.Before(until) {
			until, recovery = o.Send, o.Send.Sub(healed)
		}
	}
	return r.FaultStart, until, recovery
}

// Expected reports whether o is a request to the doomed service inside its window.
func (r *Run) expected(o load.Outcome, from, until time.Time) bool {
	return r.Doomed != "" && o.Target == r.Doomed && !o.Send.Before(from) && o.Send.Before(until)
}

// Summarize computes the run's summary.
func (r *Run) Summarize() Summary {
	s := Summary{Phases: map[string]Count{}, Streams: map[string]Count{}, Classes: map[string]int{}, Hops: map[string]int{}}
	from, until, recovery := r.doomedWindow()
	var expectedLat []time.Duration
	for _, o := range r.Outcomes {
		if r.expected(o, from, until) {
			s.Expected.add(o)
			if o.Failed() {
				if s.ExpectedClasses == nil {
					s.ExpectedClasses = map[string]int{}
				}
				s.ExpectedClasses[o.Class]++
				expectedLat = append(expectedLat, o.Latency)
			}
			continue
		}
		s.All.add(o)
		ph := r.Phase(o.Send)
		c := s.Phases[ph]
		c.add(o)
		s.Phases[ph] = c
		if ph != Before {
			s.Exposed.add(o)
		}
		st := s.Streams[o.Stream]
		st.add(o)
		s.Streams[o.Stream] = st
		if o.Failed() {
			s.Classes[o.Class]++
			s.Hops[o.Hop]++
		}
	}
	if r.Doomed != "" {
		s.Recovery = recovery
	}
	if len(expectedLat) > 0 {
		slices.Sort(expectedLat)
		s.ExpectedP50 = expectedLat[len(expectedLat)/2]
	}
	s.MeetsSLO = s.Exposed.Ratio() >= r.SLO
	var gaps []time.Duration
	for _, m := range r.Marks {
		if m.Kind != "inject" {
			continue
		}
		s.Injections++
		k := Kill{Time: m.Time, Target: m.Target, Deviation: r.deviation(m.Time)}
		if strings.Contains(m.Target, "holding") {
			pod, _, _ := strings.Cut(m.Target, " ")
			k.Buckets, k.HandOff = r.handOff(pod, m.Time)
			if k.Buckets > 0 && k.HandOff >= 0 {
				gaps = append(gaps, k.HandOff)
			}
		}
		s.MaxDeviation = max(s.MaxDeviation, k.Deviation)
		s.Kills = append(s.Kills, k)
	}
	if len(gaps) > 0 {
		slices.Sort(gaps)
		s.HandOffP50, s.HandOffMax = gaps[len(gaps)/2], gaps[len(gaps)-1]
	}
	return s
}

// deviation is the steady PodAutoscaler's largest desired-scale move in DeviationWindow after t.
func (r *Run) deviation(t time.Time) int64 {
	var before int64 = -1
	var dev int64
	for _, x := range r.Scale {
		if x.PA != r.Steady {
			continue
		}
		switch {
		case !x.Time.After(t):
			before = x.Desired
		case before >= 0 && x.Time.Sub(t) <= DeviationWindow:
			d := x.Desired - before
			dev = max(dev, d, -d)
		}
	}
	return dev
}

// handOff finds the buckets pod held just before t and the time until each was renewed after t; the
// result is the slowest one (-1 when one never was in the record).
func (r *Run) handOff(pod string, t time.Time) (int, time.Duration) {
	held := map[string]bool{}
	for _, l := range r.Leases {
		if !l.Time.After(t) {
			held[l.Lease] = strings.HasPrefix(l.Holder, pod+"_")
		}
	}
	var worst time.Duration
	n := 0
	for lease, h := range held {
		if !h {
			continue
		}
		n++
		gap := time.Duration(-1)
		for _, l := range r.Leases {
			if l.Lease == lease && l.Renew.After(t) {
				gap = l.Renew.Sub(t)
				break
			}
		}
		if gap < 0 {
			return n, -1
		}
		worst = max(worst, gap)
	}
	return n, worst
}

// WriteTable prints one row per scenario and side.
func WriteTable(w io.Writer, runs []*Run) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tside\trequests\tlost\tlost before\tlost during\tlost after\tsuccess (during+after)\tSLO\tinjections\tmax Δdesired 60s\thand-off p50\thand-off max\tlost by class\tlost by hop\texpected failures\t")
	sorted := slices.Clone(runs)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Scenario < sorted[j].Scenario })
	for _, r := range sorted {
		s := r.Summary
		slo := "FAIL"
		if s.MeetsSLO {
			slo = "ok"
		}
		ho50, homax := "-", "-"
		if s.HandOffMax > 0 {
			ho50, homax = s.HandOffP50.Round(10*time.Millisecond).String(), s.HandOffMax.Round(10*time.Millisecond).String()
		}
		expected := "-"
		if r.Doomed != "" {
			rec := "never"
			if s.Recovery >= 0 {
				rec = s.Recovery.Round(100 * time.Millisecond).String()
			}
			expected = fmt.Sprintf("%d/%d (%s, p50 %s), served %s after the undo", s.Expected.Failed, s.Expected.Total,
				classes(s.ExpectedClasses), s.ExpectedP50.Round(10*time.Millisecond), rec)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.4f\t%.3f %s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Scenario, r.Side, s.All.Total, s.All.Failed,
			s.Phases[Before].Failed, s.Phases[During].Failed, s.Phases[After].Failed, s.Exposed.Ratio(), r.SLO, slo,
			s.Injections, s.MaxDeviation, ho50, homax, classes(s.Classes), classes(s.Hops), expected)
	}
	return tw.Flush()
}

func classes(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
