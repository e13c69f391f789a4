package trace

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// Invocation is one row of the 2021 trace: an invocation of App/Func that
// ended at End (offset from the trace start) after running Duration.
type Invocation struct {
	App, Func     string
	End, Duration time.Duration
}

// Start is when the invocation arrived (never before the trace start).
func (i Invocation) Start() time.Duration { return max(0, i.End-i.Duration) }

// The 2021 trace's columns.
const (
	col21App      = "app"
	col21Func     = "func"
	col21End      = "end_timestamp"
	col21Duration = "duration"
)

// InvocationReader streams the 2021 per-invocation table (app, func,
// end_timestamp and duration in seconds), keeping the invocations that
// arrived within a window.
type InvocationReader struct {
	cr     *csv.Reader
	header []string
	key    map[string]int
	w      Window
}

// NewInvocationReader reads the header of r.
func NewInvocationReader(r io.Reader, w Window) (*InvocationReader, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	cr := newCSV(r)
	h, err := header(cr)
	if err != nil {
		return nil, err
	}
	key, err := columns(cr, h, []string{col21App, col21Func, col21End, col21Duration}, nil)
	if err != nil {
		return nil, err
	}
	return &InvocationReader{cr: cr, header: h, key: key, w: w}, nil
}

// IsAzure2021Header reports whether a header row is the 2021 trace's.
func IsAzure2021Header(h []string) bool {
	seen := map[string]int{}
	for _, name := range h {
		seen[name]++
	}
	for _, c := range []string{col21App, col21Func, col21End, col21Duration} {
		if seen[c] != 1 {
			return false
		}
	}
	return true
}

// Next returns the next invocation within the window, or io.EOF.
func (r *InvocationReader) Next() (Invocation, error) {
	for {
		rec, err := r.cr.Read()
		if err != nil {
			return Invocation{}, wrapCSV(err)
		}
		if len(rec) != len(r.header) {
			line, _ := r.cr.FieldPos(0)
			return Invocation{}, &ParseError{Line: line, Err: fmt.Errorf("%d fields, the header has %d", len(rec), len(r.header))}
		}
		inv := Invocation{App: rec[r.key[col21App]], Func: rec[r.key[col21Func]]}
		if inv.Func == "" {
			return Invocation{}, fieldErr(r.cr, r.header, r.key[col21Func], errors.New("empty function name"))
		}
		if inv.App == "" {
			inv.App = inv.Func
		}
		if inv.End, err = r.seconds(rec, col21End); err != nil {
			return Invocation{}, err
		}
		if inv.Duration, err = r.seconds(rec, col21Duration); err != nil {
			return Invocation{}, err
		}
		if r.w.Contains(inv.Start()) {
			return inv, nil
		}
	}
}

// maxSeconds keeps a time in seconds within time.Duration's range.
const maxSeconds = float64(math.MaxInt64/int64(time.Second)) / 2

func (r *InvocationReader) seconds(rec []string, col string) (time.Duration, error) {
	i := r.key[col]
	v, err := strconv.ParseFloat(rec[i], 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > maxSeconds {
		return 0, fieldErr(r.cr, r.header, i, fmt.Errorf("%q: want seconds, a finite number ≥ 0", rec[i]))
	}
	return time.Duration(v * float64(time.Second)), nil
}
