package report

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"time"
)

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

// WriteCSV writes one row per request: when it was sent (seconds from the run's start), its phase, how
// it ended, the hop that answered a failure, and whether it counts as ok, lost or an expected failure.
func WriteCSV(w io.Writer, runs []*Run) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"scenario", "side", "stream", "target", "send_unix_ns", "t_s", "phase", "latency_ms", "status", "class", "hop", "counted", "error"})
	for _, r := range runs {
		from, until, _ := r.doomedWindow()
		for _, o := range r.Outcomes {
			counted := "ok"
			switch {
			case r.expected(o, from, until):
				counted = "expected"
			case o.Failed():
				counted = "lost"
			}
			cw.Write([]string{r.Scenario, r.Side, o.Stream, o.Target, strconv.FormatInt(o.Send.UnixNano(), 10),
				strconv.FormatFloat(o.Send.Sub(r.Start).Seconds(), 'f', 3, 64), r.Phase(o.Send), ms(o.Latency),
				strconv.Itoa(o.Status), o.Class, o.Hop, counted, o.Error})
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteScaleCSV writes the PodAutoscaler samples, one row per PA and second.
func WriteScaleCSV(w io.Writer, runs []*Run) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"scenario", "side", "t_s", "pa", "desired", "actual"})
	for _, r := range runs {
		for _, x := range r.Scale {
			cw.Write([]string{r.Scenario, r.Side, strconv.FormatFloat(x.Time.Sub(r.Start).Seconds(), 'f', 3, 64), x.PA,
				strconv.FormatInt(x.Desired, 10), strconv.FormatInt(x.Actual, 10)})
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSON writes the command, the runs' summaries and fault marks.
func WriteJSON(w io.Writer, command string, started, finished time.Time, runs []*Run) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"command": command, "started": started, "finished": finished, "runs": runs})
}
