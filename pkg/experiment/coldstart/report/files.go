package report

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"time"
)

// CSVHeader is the first line of coldstart.csv: identity, the instants (Unix nanoseconds, empty when
// unknown), then every phase in milliseconds (empty when unknown).
func CSVHeader() []string {
	h := []string{"side", "level", "round", "service", "revision", "pod", "status", "error", "scale_source",
		"t_send", "t_scale", "t_scale_received", "t_qp_up", "t_pod_ready", "t_first_byte",
		"thaw_arrival", "thaw_poke_sent", "thaw_poke_received", "thaw_decided", "thaw_scale_written",
		"thaw_pod_ready", "thaw_first_byte"}
	for _, p := range Phases {
		h = append(h, p.Name+" ms")
	}
	return h
}

func unixNS(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func csvRecord(s *Sample) []string {
	r := []string{s.Side, strconv.Itoa(s.Level), strconv.Itoa(s.Round), s.Service, s.Revision, s.Pod,
		strconv.Itoa(s.Status), s.Error, s.ScaleSource,
		unixNS(s.Send), unixNS(s.Scale), unixNS(s.ScaleReceived), unixNS(s.QPUp), unixNS(s.PodReady), unixNS(s.FirstByte)}
	th := s.Thaw
	if th == nil {
		th = &ThawTimes{}
	}
	for _, t := range []time.Time{th.Arrival, th.PokeSent, th.PokeReceived, th.Decided, th.ScaleWritten, th.PodReady, th.FirstByte} {
		r = append(r, unixNS(t))
	}
	for _, p := range Phases {
		if d, ok := p.Of(s); ok {
			r = append(r, strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64))
		} else {
			r = append(r, "")
		}
	}
	return r
}

// WriteCSV writes one line per sample.
func WriteCSV(w io.Writer, samples []Sample) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader()); err != nil {
		return err
	}
	for i := range samples {
		if err := cw.Write(csvRecord(&samples[i])); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Document is coldstart.json: how the run was made, every sample, and the summary rows (durations in
// nanoseconds).
type Document struct {
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Samples  []Sample  `json:"samples"`
	Summary  []Row     `json:"summary"`
}

// WriteJSON writes the Document for samples.
func WriteJSON(w io.Writer, command string, started, finished time.Time, samples []Sample) error {
	if samples == nil {
		samples = []Sample{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(Document{Command: command, Started: started, Finished: finished, Samples: samples, Summary: Summaries(samples)})
}
