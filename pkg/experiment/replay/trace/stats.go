package trace

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Percentile is one point of a distribution: P in [0, 100] and its value.
type Percentile struct{ P, V float64 }

// Durations is one row of the 2019 execution-time table, in milliseconds.
type Durations struct {
	Owner, App, Function string
	Count                float64
	Average              float64
	Minimum, Maximum     float64
	// Percentiles are the percentile_Average_P columns present, by P.
	Percentiles []Percentile
}

// Memory is one row of the 2019 memory table, in MB.
type Memory struct {
	Owner, App  string
	SampleCount float64
	Average     float64
	Percentiles []Percentile
}

var durationPercentiles = []float64{0, 1, 25, 50, 75, 99, 100}
var memoryPercentiles = []float64{1, 5, 25, 50, 75, 95, 99, 100}

// Key names a function across the 2019 tables.
func Key(app, function string) string { return app + "/" + function }

// ReadDurations reads a whole execution-time table, keyed by Key. It holds
// one row per function, the table's own size.
func ReadDurations(r io.Reader) (map[string]Durations, error) {
	pcols := make([]string, len(durationPercentiles))
	for i, p := range durationPercentiles {
		pcols[i] = "percentile_Average_" + strconv.FormatFloat(p, 'f', -1, 64)
	}
	out := make(map[string]Durations)
	err := readTable(r, []string{colFunction, "Average"},
		append([]string{colOwner, colApp, "Count", "Minimum", "Maximum"}, pcols...),
		func(get func(string) (string, bool), num func(string) (float64, bool, error)) error {
			var d Durations
			d.Function, _ = get(colFunction)
			d.App, _ = get(colApp)
			d.Owner, _ = get(colOwner)
			if d.App == "" {
				d.App = d.Function
			}
			var err error
			if d.Average, _, err = num("Average"); err != nil {
				return err
			}
			if d.Count, _, err = num("Count"); err != nil {
				return err
			}
			if d.Minimum, _, err = num("Minimum"); err != nil {
				return err
			}
			if d.Maximum, _, err = num("Maximum"); err != nil {
				return err
			}
			for i, c := range pcols {
				v, ok, err := num(c)
				if err != nil {
					return err
				}
				if ok {
					d.Percentiles = append(d.Percentiles, Percentile{P: durationPercentiles[i], V: v})
				}
			}
			out[Key(d.App, d.Function)] = d
			return nil
		})
	return out, err
}

// ReadMemory reads a whole memory table, keyed by app.
func ReadMemory(r io.Reader) (map[string]Memory, error) {
	pcols := make([]string, len(memoryPercentiles))
	for i, p := range memoryPercentiles {
		pcols[i] = "AverageAllocatedMb_pct" + strconv.FormatFloat(p, 'f', -1, 64)
	}
	out := make(map[string]Memory)
	err := readTable(r, []string{colApp, "AverageAllocatedMb"},
		append([]string{colOwner, "SampleCount"}, pcols...),
		func(get func(string) (string, bool), num func(string) (float64, bool, error)) error {
			var m Memory
			m.App, _ = get(colApp)
			m.Owner, _ = get(colOwner)
			var err error
			if m.Average, _, err = num("AverageAllocatedMb"); err != nil {
				return err
			}
			if m.SampleCount, _, err = num("SampleCount"); err != nil {
				return err
			}
			for i, c := range pcols {
				v, ok, err := num(c)
				if err != nil {
					return err
				}
				if ok {
					m.Percentiles = append(m.Percentiles, Percentile{P: memoryPercentiles[i], V: v})
				}
			}
			out[m.App] = m
			return nil
		})
	return out, err
}

// readTable streams a keyed CSV table and calls row for each record. In
// row, get returns a column's text and num parses a column as a finite
// number ≥ 0 (an empty optional cell is absent, not an error).
func readTable(r io.Reader, required, optional []string,
	row func(get func(string) (string, bool), num func(string) (float64, bool, error)) error) error {
	cr := newCSV(r)
	h, err := header(cr)
	if err != nil {
		return err
	}
	idx, err := columns(cr, h, required, optional)
	if err != nil {
		return err
	}
	req := make(map[string]bool, len(required))
	for _, c := range required {
		req[c] = true
	}
	var rec []string
	get := func(c string) (string, bool) {
		i, ok := idx[c]
		if !ok {
			return "", false
		}
		return rec[i], true
	}
	num := func(c string) (float64, bool, error) {
		i, ok := idx[c]
		if !ok {
			return 0, false, nil
		}
		s := rec[i]
		if s == "" {
			if req[c] {
				return 0, false, fieldErr(cr, h, i, errors.New("empty value"))
			}
			return 0, false, nil
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return 0, false, fieldErr(cr, h, i, fmt.Errorf("%q: want a finite number ≥ 0", s))
		}
		return v, true, nil
	}
	for {
		rec, err = cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return wrapCSV(err)
		}
		if len(rec) != len(h) {
			line, _ := cr.FieldPos(0)
			return &ParseError{Line: line, Err: fmt.Errorf("%d fields, the header has %d", len(rec), len(h))}
		}
		for _, c := range required {
			if rec[idx[c]] == "" {
				return fieldErr(cr, h, idx[c], errors.New("empty value"))
			}
		}
		if err := row(get, num); err != nil {
			return err
		}
	}
}
