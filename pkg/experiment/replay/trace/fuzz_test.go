package trace

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// parseErrorOK checks the reader's promise: every failure on malformed input
// is a *ParseError with a line (or a window error before reading).
func parseErrorOK(t *testing.T, err error) {
	t.Helper()
	if err == nil || errors.Is(err, io.EOF) {
		return
	}
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ParseError", err, err)
	}
	if pe.Line < 1 || pe.Column < 0 {
		t.Fatalf("error %v has line %d column %d", err, pe.Line, pe.Column)
	}
}

func FuzzAzure2019(f *testing.F) {
	f.Add("HashFunction,HashApp,HashOwner,minute_1,minute_2\nf,a,o,1,2\n")
	f.Add("HashOwner,HashApp,HashFunction,Trigger,480,481\no,a,f,http,0,3\n")
	f.Add("HashFunction,minute_1\nf,\"1\"\"\n")
	f.Add("HashFunction,Average,Count,percentile_Average_50\nf,1.5,2,1\n")
	f.Add("HashApp,AverageAllocatedMb\na,100\n")
	f.Fuzz(func(t *testing.T, in string) {
		r, err := NewInvocationsReader(strings.NewReader(in), Window{})
		parseErrorOK(t, err)
		if err == nil {
			first, n := r.Minutes()
			for range 1000 {
				fm, err := r.Next()
				parseErrorOK(t, err)
				if err != nil {
					break
				}
				if fm.FirstMinute != first || len(fm.Counts) != n || fm.Function == "" {
					t.Fatalf("row %+v, want %d minutes from %d and a name", fm, n, first)
				}
			}
		}
		_, err = ReadDurations(strings.NewReader(in))
		parseErrorOK(t, err)
		_, err = ReadMemory(strings.NewReader(in))
		parseErrorOK(t, err)
	})
}

func FuzzAzure2021(f *testing.F) {
	f.Add("app,func,end_timestamp,duration\na,f,10.5,0.5\n")
	f.Add("func,app,duration,end_timestamp\nf,a,1e3,2\n")
	f.Fuzz(func(t *testing.T, in string) {
		r, err := NewInvocationReader(strings.NewReader(in), Window{})
		parseErrorOK(t, err)
		if err != nil {
			return
		}
		for range 1000 {
			inv, err := r.Next()
			parseErrorOK(t, err)
			if err != nil {
				return
			}
			if inv.Start() < 0 || inv.Duration < 0 || inv.Func == "" {
				t.Fatalf("invocation %+v", inv)
			}
		}
	})
}
