package trace

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// SampleDirEnv names the directory of the shared trace sample; by default it
// is the copy of shared/ beside the checkout.
const SampleDirEnv = "THAW_TRACE_SAMPLE"

// sampleDir is the shared sample. It must exist: a missing sample fails the
// test rather than skipping it, so that CI cannot pass without reading it.
func sampleDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(SampleDirEnv)
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "..", "shared", "traces", "azure-functions-2019-sample-100")
	}
	if _, err := os.Stat(filepath.Join(dir, "inv.csv")); err != nil {
		t.Fatalf("the shared trace sample is missing (%v): put shared/traces beside the checkout or set %s", err, SampleDirEnv)
	}
	return dir
}

func TestSharedSample(t *testing.T) {
	src, err := Open(sampleDir(t), Window{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var (
		n, withDur, withMem int
		lo, hi              uint64 = 1 << 62, 0
	)
	for {
		f, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if f.Minutes.FirstMinute != 1 || len(f.Minutes.Counts) != MinutesPerDay {
			t.Fatalf("%s: minutes %d+%d, want the whole day", f.Name, f.Minutes.FirstMinute, len(f.Minutes.Counts))
		}
		tot := f.Minutes.Total()
		lo, hi = min(lo, tot), max(hi, tot)
		if f.Durations != nil {
			withDur++
		}
		if f.MemoryMB > 0 {
			withMem++
		}
	}
	// The figures the sample's README gives.
	if n != 100 || withDur != 100 || withMem != 100 {
		t.Errorf("%d functions, %d with execution times, %d with memory; want 100 of each", n, withDur, withMem)
	}
	if lo != 1 || hi != 160748 {
		t.Errorf("invocations per function from %d to %d, want 1 to 160748", lo, hi)
	}
}
