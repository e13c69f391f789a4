// Package trace reads serverless invocation traces for replay: the Azure
// Functions 2019 trace (invocations per function per minute, with its
// execution-time and memory tables) and the Azure Functions 2021 trace (one
// row per invocation).
//
// Readers stream: they hold one row at a time, cap the length of a line, and
// key on header names, not positions, so that the dataset's own files and
// the samples published with other column orders and spellings read alike.
// Malformed input is reported as a *ParseError naming the line, the byte
// column and the header of the offending field.
package trace

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
)

// MaxLineBytes bounds one line of a trace file. A day of per-minute counts
// is about 10 KiB; a line far longer is not a trace and would otherwise be
// read whole into memory.
const MaxLineBytes = 1 << 20

// ParseError is a malformed row or header.
type ParseError struct {
	// Line is the 1-based line of the field; Column its 1-based byte column
	// (0 when the error concerns the whole line).
	Line, Column int
	// Field is the header name of the column, when known.
	Field string
	Err   error
}

func (e *ParseError) Error() string {
	switch {
	case e.Column > 0 && e.Field != "":
		return fmt.Sprintf("line %d, column %d (%s): %v", e.Line, e.Column, e.Field, e.Err)
	case e.Column > 0:
		return fmt.Sprintf("line %d, column %d: %v", e.Line, e.Column, e.Err)
	default:
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
}

func (e *ParseError) Unwrap() error { return e.Err }

// ErrLineTooLong is returned for a line over MaxLineBytes.
var ErrLineTooLong = errors.New("line too long")

// limitLines fails a read once a line grows past max bytes.
type limitLines struct {
	r    io.Reader
	max  int
	cur  int // bytes since the last newline
	line int // 1-based number of the current line
}

func (l *limitLines) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] == '\n' {
			l.cur = 0
			l.line++
			continue
		}
		if l.cur++; l.cur > l.max {
			// Hand over what precedes the long line's excess so that the
			// CSV reader's own errors for earlier lines still win.
			return i, &ParseError{Line: l.line, Err: fmt.Errorf("%w (over %d bytes)", ErrLineTooLong, l.max)}
		}
	}
	return n, err
}

// newCSV returns a CSV reader over r with the line cap; rows may have any
// number of fields (the readers check against the header themselves).
func newCSV(r io.Reader) *csv.Reader {
	cr := csv.NewReader(bufio.NewReaderSize(&limitLines{r: r, max: MaxLineBytes, line: 1}, 64<<10))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	return cr
}

// wrapCSV turns the CSV reader's errors into ParseErrors and passes io.EOF
// and line-cap errors through.
func wrapCSV(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ParseError{Line: pe.Line, Column: pe.Column, Err: pe.Err}
	}
	var le *ParseError
	if errors.As(err, &le) {
		return le
	}
	return err
}

// fieldErr is a ParseError for field i of the current record.
func fieldErr(cr *csv.Reader, header []string, i int, err error) error {
	line, col := cr.FieldPos(i)
	name := ""
	if i < len(header) {
		name = header[i]
	}
	return &ParseError{Line: line, Column: col, Field: name, Err: err}
}

// header reads the header row and returns a copy of it.
func header(cr *csv.Reader) ([]string, error) {
	rec, err := cr.Read()
	if err == io.EOF {
		return nil, &ParseError{Line: 1, Err: errors.New("empty file: want a header row")}
	}
	if err != nil {
		return nil, wrapCSV(err)
	}
	h := make([]string, len(rec))
	for i, f := range rec {
		h[i] = trimBOM(f, i)
	}
	return h, nil
}

// trimBOM drops a UTF-8 byte-order mark from the first header field.
func trimBOM(s string, i int) string {
	if i == 0 && len(s) >= 3 && s[:3] == "\xef\xbb\xbf" {
		return s[3:]
	}
	return s
}

// columns maps wanted header names to their indexes; required ones must be
// present, and no name may appear twice. cr has just read the header.
func columns(cr *csv.Reader, header []string, required, optional []string) (map[string]int, error) {
	idx := make(map[string]int, len(required)+len(optional))
	want := make(map[string]bool, len(required)+len(optional))
	for _, n := range required {
		want[n] = true
	}
	for _, n := range optional {
		want[n] = true
	}
	for i, h := range header {
		if !want[h] {
			continue
		}
		if _, dup := idx[h]; dup {
			return nil, fieldErr(cr, header, i, fmt.Errorf("column %q appears twice", h))
		}
		idx[h] = i
	}
	for _, n := range required {
		if _, ok := idx[n]; !ok {
			return nil, &ParseError{Line: 1, Err: fmt.Errorf("no column %q in the header", n)}
		}
	}
	return idx, nil
}
