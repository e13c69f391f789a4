package trace

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Formats of a trace.
const (
	FormatAzure2019 = "azure-functions-2019"
	FormatAzure2021 = "azure-functions-2021"
)

// Function is one function of a trace, ready to replay.
type Function struct {
	App, Name string
	// MemoryMB is the app's average allocated memory; 0 when the trace
	// does not say.
	MemoryMB float64
	// For the 2019 trace: counts per minute and the execution times
	// (Durations nil when the table has no row for the function).
	Minutes   *FunctionMinutes
	Durations *Durations
	// For the 2021 trace: the invocations, by start time.
	Invocations []Invocation
}

// Source yields the functions of a trace one at a time.
type Source struct {
	Format string
	// Paths are the files read.
	Paths []string

	next  func() (*Function, error)
	close func() error
}

// Next returns the next function, or io.EOF.
func (s *Source) Next() (*Function, error) { return s.next() }

// Close releases the files.
func (s *Source) Close() error { return s.close() }

// Open opens a trace: a directory of the 2019 tables (inv.csv, run.csv,
// mem.csv as in the vHive samples, or the dataset's
// invocations_per_function_md.anon.dNN.csv, function_durations_percentiles
// .anon.dNN.csv and app_memory_percentiles.anon.dNN.csv), a 2019
// invocations table alone, or a 2021 per-invocation table. Only minutes or
// invocations within w are kept.
//
// The 2019 invocations stream one function at a time; the execution-time
// and memory tables (one row per function or app) are read whole. A 2021
// table has no per-function order, so its invocations within w are grouped
// in memory before the first function is returned.
func Open(path string, w Window) (*Source, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return openDir(path, w)
	}
	h, err := sniffHeader(path)
	if err != nil {
		return nil, err
	}
	if IsAzure2021Header(h) {
		return open2021(path, w)
	}
	return open2019(path, "", "", w)
}

// sniffHeader reads the first line of a file as CSV.
func sniffHeader(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := header(newCSV(f))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// dirFile finds the single file of a table in dir, by its sample name or the
// dataset's prefix; "" when there is none.
func dirFile(dir, sample, prefix string) (string, error) {
	if p := filepath.Join(dir, sample); fileExists(p) {
		return p, nil
	}
	m, err := filepath.Glob(filepath.Join(dir, prefix+"*.csv"))
	if err != nil {
		return "", err
	}
	switch len(m) {
	case 0:
		return "", nil
	case 1:
		return m[0], nil
	default:
		sort.Strings(m)
		return "", fmt.Errorf("%s: %d files match %s*.csv (%s, ...): name one day's file", dir, len(m), prefix, filepath.Base(m[0]))
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func openDir(dir string, w Window) (*Source, error) {
	inv, err := dirFile(dir, "inv.csv", "invocations_per_function")
	if err != nil {
		return nil, err
	}
	if inv == "" {
		return nil, fmt.Errorf("%s: no invocations table (inv.csv or invocations_per_function*.csv)", dir)
	}
	run, err := dirFile(dir, "run.csv", "function_durations")
	if err != nil {
		return nil, err
	}
	mem, err := dirFile(dir, "mem.csv", "app_memory")
	if err != nil {
		return nil, err
	}
	return open2019(inv, run, mem, w)
}

// readAll opens path and reads it with read, naming the file in errors.
func readAll[T any](path string, read func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, err
	}
	defer f.Close()
	v, err := read(bufio.NewReader(f))
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func open2019(inv, run, mem string, w Window) (*Source, error) {
	var (
		durs map[string]Durations
		mems map[string]Memory
		err  error
	)
	paths := []string{inv}
	if run != "" {
		if durs, err = readAll(run, ReadDurations); err != nil {
			return nil, err
		}
		paths = append(paths, run)
	}
	if mem != "" {
		if mems, err = readAll(mem, ReadMemory); err != nil {
			return nil, err
		}
		paths = append(paths, mem)
	}
	f, err := os.Open(inv)
	if err != nil {
		return nil, err
	}
	ir, err := NewInvocationsReader(f, w)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", inv, err)
	}
	return &Source{
		Format: FormatAzure2019,
		Paths:  paths,
		next: func() (*Function, error) {
			m, err := ir.Next()
			if err == io.EOF {
				return nil, io.EOF
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", inv, err)
			}
			fn := &Function{App: m.App, Name: m.Function, Minutes: m}
			if d, ok := durs[Key(m.App, m.Function)]; ok {
				fn.Durations = &d
			}
			if mm, ok := mems[m.App]; ok {
				fn.MemoryMB = mm.Average
			}
			return fn, nil
		},
		close: f.Close,
	}, nil
}

func open2021(path string, w Window) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ir, err := NewInvocationReader(bufio.NewReader(f), w)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	byFn := make(map[string]*Function)
	for {
		inv, err := ir.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		k := Key(inv.App, inv.Func)
		fn := byFn[k]
		if fn == nil {
			fn = &Function{App: inv.App, Name: inv.Func}
			byFn[k] = fn
		}
		fn.Invocations = append(fn.Invocations, inv)
	}
	keys := make([]string, 0, len(byFn))
	for k, fn := range byFn {
		keys = append(keys, k)
		sort.SliceStable(fn.Invocations, func(i, j int) bool {
			return fn.Invocations[i].Start() < fn.Invocations[j].Start()
		})
	}
	sort.Strings(keys)
	i := 0
	return &Source{
		Format: FormatAzure2021,
		Paths:  []string{path},
		next: func() (*Function, error) {
			if i == len(keys) {
				return nil, io.EOF
			}
			fn := byFn[keys[i]]
			delete(byFn, keys[i]) // the caller owns it now
			i++
			return fn, nil
		},
		close: func() error { return nil },
	}, nil
}

// String names the format and files of a source, for messages.
func (s *Source) String() string {
	return s.Format + " (" + strings.Join(s.Paths, ", ") + ")"
}
