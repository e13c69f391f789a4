package trace

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MinutesPerDay is the length of one day file of the 2019 trace.
const MinutesPerDay = 1440

// Window selects part of a trace, as offsets from its start. The zero
// Window is the whole trace.
type Window struct {
	From time.Duration
	// To is exclusive; 0 means no end.
	To time.Duration
}

// Validate checks that the window is not empty or negative.
func (w Window) Validate() error {
	if w.From < 0 || w.To < 0 {
		return fmt.Errorf("window %v-%v: negative", w.From, w.To)
	}
	if w.To != 0 && w.To <= w.From {
		return fmt.Errorf("window %v-%v: empty", w.From, w.To)
	}
	return nil
}

// Contains reports whether offset t is in the window.
func (w Window) Contains(t time.Duration) bool {
	return t >= w.From && (w.To == 0 || t < w.To)
}

// minutes returns the 1-based trace minutes the window covers: minute m
// spans [(m−1) min, m min), and is in the window when it starts there.
func (w Window) minutes() (first, last int) {
	first = int((w.From+time.Minute-1)/time.Minute) + 1
	last = 1 << 30
	if w.To != 0 {
		last = int((w.To + time.Minute - 1) / time.Minute)
	}
	return first, last
}

// FunctionMinutes is one row of the 2019 invocations table: the invocations
// of one function in each minute.
type FunctionMinutes struct {
	Owner, App, Function, Trigger string
	// FirstMinute is the 1-based trace minute of Counts[0]; minutes missing
	// from the file (outside its own window or the reader's) are absent.
	FirstMinute int
	Counts      []uint32
}

// Total is the number of invocations in the row.
func (f *FunctionMinutes) Total() uint64 {
	var n uint64
	for _, c := range f.Counts {
		n += uint64(c)
	}
	return n
}

// The 2019 tables' key columns, as the dataset spells them.
const (
	colOwner    = "HashOwner"
	colApp      = "HashApp"
	colFunction = "HashFunction"
	colTrigger  = "Trigger"
)

// InvocationsReader streams the 2019 invocations-per-minute table. The
// minute columns are named `minute_N` (as in the vHive samples) or `N` (as
// in the dataset), in any order, possibly only part of the day.
type InvocationsReader struct {
	cr     *csv.Reader
	header []string
	key    map[string]int
	// minute[i] is the trace minute of column i, 0 for other columns.
	minute []int
	// first and n place the selected minutes in Counts.
	first, n int
}

// NewInvocationsReader reads the header of r and returns a reader of the
// rows, keeping only the minutes within w.
func NewInvocationsReader(r io.Reader, w Window) (*InvocationsReader, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	cr := newCSV(r)
	h, err := header(cr)
	if err != nil {
		return nil, err
	}
	key, err := columns(cr, h, []string{colFunction}, []string{colOwner, colApp, colTrigger})
	if err != nil {
		return nil, err
	}
	wFirst, wLast := w.minutes()
	minute := make([]int, len(h))
	seen := make(map[int]bool)
	lo, hi, any := 0, 0, false
	for i, name := range h {
		m, ok, err := minuteColumn(name)
		if err != nil {
			return nil, fieldErr(cr, h, i, err)
		}
		if !ok {
			continue
		}
		if seen[m] {
			return nil, fieldErr(cr, h, i, fmt.Errorf("minute %d appears twice", m))
		}
		seen[m] = true
		any = true
		if m < wFirst || m > wLast {
			continue
		}
		minute[i] = m
		if lo == 0 || m < lo {
			lo = m
		}
		hi = max(hi, m)
	}
	if !any {
		return nil, &ParseError{Line: 1, Err: errors.New("no minute columns (minute_1.. or 1..) in the header")}
	}
	if lo == 0 {
		return nil, &ParseError{Line: 1, Err: fmt.Errorf("no minute column within the window %v-%v", w.From, w.To)}
	}
	return &InvocationsReader{cr: cr, header: h, key: key, minute: minute, first: lo, n: hi - lo + 1}, nil
}

// minuteColumn recognises a minute column name, `minute_N` or `N`; a name
// with the prefix but no number is a minute column all the same, and bad.
func minuteColumn(name string) (m int, ok bool, err error) {
	s, prefixed := strings.CutPrefix(name, "minute_")
	n, perr := strconv.Atoi(s)
	switch {
	case perr == nil && n > 0:
		return n, true, nil
	case perr == nil || prefixed:
		return 0, true, fmt.Errorf("minute column %q: want a minute number from 1", name)
	default:
		return 0, false, nil
	}
}

// Minutes returns the first selected minute and how many follow.
func (r *InvocationsReader) Minutes() (first, n int) { return r.first, r.n }

// Next returns the next row, or io.EOF after the last. The returned row is
// the caller's.
func (r *InvocationsReader) Next() (*FunctionMinutes, error) {
	rec, err := r.cr.Read()
	if err != nil {
		return nil, wrapCSV(err)
	}
	if len(rec) != len(r.header) {
		line, _ := r.cr.FieldPos(0)
		return nil, &ParseError{Line: line, Err: fmt.Errorf("%d fields, the header has %d", len(rec), len(r.header))}
	}
	f := &FunctionMinutes{FirstMinute: r.first, Counts: make([]uint32, r.n)}
	f.Function = rec[r.key[colFunction]]
	if f.Function == "" {
		return nil, fieldErr(r.cr, r.header, r.key[colFunction], errors.New("empty function name"))
	}
	if i, ok := r.key[colApp]; ok {
		f.App = rec[i]
	}
	if i, ok := r.key[colOwner]; ok {
		f.Owner = rec[i]
	}
	if i, ok := r.key[colTrigger]; ok {
		f.Trigger = rec[i]
	}
	if f.App == "" {
		// A table without apps: each function is its own app.
		f.App = f.Function
	}
	for i, m := range r.minute {
		if m == 0 {
			continue
		}
		c, err := strconv.ParseUint(rec[i], 10, 32)
		if err != nil {
			return nil, fieldErr(r.cr, r.header, i, fmt.Errorf("invocation count %q: want a whole number ≥ 0", rec[i]))
		}
		f.Counts[m-r.first] = uint32(c)
	}
	return f, nil
}
