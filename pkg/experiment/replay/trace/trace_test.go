package trace

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func readAllMinutes(t *testing.T, in string, w Window) ([]*FunctionMinutes, error) {
	t.Helper()
	r, err := NewInvocationsReader(strings.NewReader(in), w)
	if err != nil {
		return nil, err
	}
	var out []*FunctionMinutes
	for {
		f, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

func TestInvocationsHeaderSpellings(t *testing.T) {
	tests := []struct {
		name string
		in   string
		w    Window
		want []*FunctionMinutes
	}{{
		name: "vHive sample spelling",
		in: "HashFunction,HashApp,HashOwner,minute_1,minute_2,minute_3\n" +
			"f1,a1,o1,0,2,1\n" +
			"f2,a1,o1,5,0,0\n",
		want: []*FunctionMinutes{
			{Owner: "o1", App: "a1", Function: "f1", FirstMinute: 1, Counts: []uint32{0, 2, 1}},
			{Owner: "o1", App: "a1", Function: "f2", FirstMinute: 1, Counts: []uint32{5, 0, 0}},
		},
	}, {
		name: "dataset spelling, other order, trigger",
		in: "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n" +
			"o1,a1,f1,http,0,2,1\n",
		want: []*FunctionMinutes{
			{Owner: "o1", App: "a1", Function: "f1", Trigger: "http", FirstMinute: 1, Counts: []uint32{0, 2, 1}},
		},
	}, {
		name: "file holding a window of the day, minutes out of order",
		in: "HashFunction,HashApp,HashOwner,482,480,481\n" +
			"f1,a1,o1,3,1,2\n",
		want: []*FunctionMinutes{
			{Owner: "o1", App: "a1", Function: "f1", FirstMinute: 480, Counts: []uint32{1, 2, 3}},
		},
	}, {
		name: "reader window keeps minutes 2..3 (offsets 1m to 3m)",
		in: "HashFunction,minute_1,minute_2,minute_3,minute_4\n" +
			"f1,1,2,3,4\n",
		w: Window{From: time.Minute, To: 3 * time.Minute},
		want: []*FunctionMinutes{
			{App: "f1", Function: "f1", FirstMinute: 2, Counts: []uint32{2, 3}},
		},
	}, {
		name: "byte-order mark and unknown columns ignored",
		in: "\xef\xbb\xbfHashFunction,Extra,minute_1\n" +
			"f1,x,7\n",
		want: []*FunctionMinutes{
			{App: "f1", Function: "f1", FirstMinute: 1, Counts: []uint32{7}},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAllMinutes(t, tc.in, tc.w)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", deref(got), deref(tc.want))
			}
		})
	}
}

func deref(fs []*FunctionMinutes) []FunctionMinutes {
	out := make([]FunctionMinutes, len(fs))
	for i, f := range fs {
		out[i] = *f
	}
	return out
}

func TestInvocationsErrors(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		w         Window
		line, col int
		field     string
		msg       string
	}{
		{name: "empty", in: "", line: 1, msg: "empty file"},
		{name: "no function column", in: "HashApp,minute_1\na,1\n", line: 1, msg: `no column "HashFunction"`},
		{name: "no minutes", in: "HashFunction,HashApp\nf,a\n", line: 1, msg: "no minute columns"},
		{name: "minute zero", in: "HashFunction,minute_0\nf,1\n", line: 1, col: 14, field: "minute_0", msg: "from 1"},
		{name: "bad minute name", in: "HashFunction,minute_x\nf,1\n", line: 1, field: "minute_x", msg: "from 1"},
		{name: "minute twice", in: "HashFunction,minute_1,1\nf,1,1\n", line: 1, col: 23, field: "1", msg: "twice"},
		{name: "column twice", in: "HashFunction,HashApp,HashApp,minute_1\nf,a,a,1\n", line: 1, col: 22, field: "HashApp", msg: "twice"},
		{name: "window misses file", in: "HashFunction,minute_1\nf,1\n", w: Window{From: time.Hour}, line: 1, msg: "within the window"},
		{name: "negative count", in: "HashFunction,HashApp,minute_1,minute_2\nf,a,1,2\ng,a,3,-1\n",
			line: 3, col: 7, field: "minute_2", msg: "whole number"},
		{name: "fractional count", in: "HashFunction,minute_1\nf,1.5\n", line: 2, col: 3, field: "minute_1", msg: "whole number"},
		{name: "short row", in: "HashFunction,minute_1,minute_2\nf,1\n", line: 2, msg: "2 fields, the header has 3"},
		{name: "empty function", in: "HashFunction,minute_1\n,1\n", line: 2, col: 1, field: "HashFunction", msg: "empty function"},
		{name: "bad quote", in: "HashFunction,minute_1\nf,\"1\n", line: 2, msg: "quote"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAllMinutes(t, tc.in, tc.w)
			checkParseError(t, err, tc.line, tc.col, tc.field, tc.msg)
		})
	}
}

func checkParseError(t *testing.T, err error, line, col int, field, msg string) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T): want a *ParseError", err, err)
	}
	if pe.Line != line || (col != 0 && pe.Column != col) || (field != "" && pe.Field != field) {
		t.Errorf("error at line %d column %d field %q, want line %d column %d field %q (%v)",
			pe.Line, pe.Column, pe.Field, line, col, field, err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not say %q", err, msg)
	}
}

func TestLineTooLong(t *testing.T) {
	in := "HashFunction,minute_1\nf,1\ng," + strings.Repeat("1", MaxLineBytes+10) + "\n"
	_, err := readAllMinutes(t, in, Window{})
	checkParseError(t, err, 3, 0, "", "line too long")
	if !errors.Is(err, ErrLineTooLong) {
		t.Errorf("error %v is not ErrLineTooLong", err)
	}
}

func TestStatsTables(t *testing.T) {
	durs, err := ReadDurations(strings.NewReader(
		"HashFunction,HashApp,HashOwner,Count,Average,Minimum,Maximum,percentile_Average_0,percentile_Average_50,percentile_Average_100\n" +
			"f1,a1,o1,10,250,100,900,100,200,900\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Durations{Owner: "o1", App: "a1", Function: "f1", Count: 10, Average: 250, Minimum: 100, Maximum: 900,
		Percentiles: []Percentile{{0, 100}, {50, 200}, {100, 900}}}
	if got := durs[Key("a1", "f1")]; !reflect.DeepEqual(got, want) {
		t.Errorf("durations %+v, want %+v", got, want)
	}

	mems, err := ReadMemory(strings.NewReader(
		"HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct100\n" +
			"o1,a1,5,170,,200\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantM := Memory{Owner: "o1", App: "a1", SampleCount: 5, Average: 170, Percentiles: []Percentile{{100, 200}}}
	if got := mems["a1"]; !reflect.DeepEqual(got, wantM) {
		t.Errorf("memory %+v, want %+v", got, wantM)
	}

	_, err = ReadDurations(strings.NewReader("HashFunction,Average\nf1,abc\n"))
	checkParseError(t, err, 2, 4, "Average", "finite number")
	_, err = ReadMemory(strings.NewReader("HashApp,AverageAllocatedMb\na,\n"))
	checkParseError(t, err, 2, 3, "AverageAllocatedMb", "empty value")
	_, err = ReadMemory(strings.NewReader("HashApp,AverageAllocatedMb\na,NaN\n"))
	checkParseError(t, err, 2, 3, "AverageAllocatedMb", "finite number")
}

func TestAzure2021(t *testing.T) {
	in := "app,func,end_timestamp,duration\n" +
		"a1,f1,10.5,0.5\n" +
		"a1,f2,100,2\n" +
		"a2,f1,3601,1\n"
	r, err := NewInvocationReader(strings.NewReader(in), Window{To: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var got []Invocation
	for {
		inv, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, inv)
	}
	want := []Invocation{
		{App: "a1", Func: "f1", End: 10500 * time.Millisecond, Duration: 500 * time.Millisecond},
		{App: "a1", Func: "f2", End: 100 * time.Second, Duration: 2 * time.Second},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v (the third starts after the window)", got, want)
	}
	if s := want[0].Start(); s != 10*time.Second {
		t.Errorf("start %v, want 10s", s)
	}

	for _, tc := range []struct {
		name, in  string
		line, col int
		field     string
		msg       string
	}{
		{"missing column", "app,func,duration\na,f,1\n", 1, 0, "", `no column "end_timestamp"`},
		{"negative duration", "app,func,end_timestamp,duration\na,f,1,-2\n", 2, 7, "duration", "seconds"},
		{"not a number", "func,app,duration,end_timestamp\nf,a,1,x\n", 2, 7, "end_timestamp", "seconds"},
		{"infinite", "app,func,end_timestamp,duration\na,f,Inf,1\n", 2, 5, "end_timestamp", "seconds"},
		{"empty func", "app,func,end_timestamp,duration\na,,1,1\n", 2, 3, "func", "empty function"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewInvocationReader(strings.NewReader(tc.in), Window{})
			if err == nil {
				_, err = r.Next()
			}
			checkParseError(t, err, tc.line, tc.col, tc.field, tc.msg)
		})
	}
}

func TestOpenDetectsFormats(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	d19 := filepath.Join(dir, "d19")
	if err := os.Mkdir(d19, 0o755); err != nil {
		t.Fatal(err)
	}
	write("d19/invocations_per_function_md.anon.d01.csv", "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,0\no,b,g,timer,0,0\n")
	write("d19/function_durations_percentiles.anon.d01.csv", "HashOwner,HashApp,HashFunction,Average,Count\no,a,f,120,1\n")
	write("d19/app_memory_percentiles.anon.d01.csv", "HashOwner,HashApp,SampleCount,AverageAllocatedMb\no,a,3,150\n")
	src, err := Open(d19, Window{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Format != FormatAzure2019 || len(src.Paths) != 3 {
		t.Errorf("format %s paths %v", src.Format, src.Paths)
	}
	f, err := src.Next()
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "f" || f.MemoryMB != 150 || f.Durations == nil || f.Durations.Average != 120 {
		t.Errorf("first function %+v", f)
	}
	g, err := src.Next()
	if err != nil {
		t.Fatal(err)
	}
	if g.Durations != nil || g.MemoryMB != 0 {
		t.Errorf("second function has no rows in the other tables: %+v", g)
	}
	if _, err := src.Next(); err != io.EOF {
		t.Errorf("after the last: %v, want EOF", err)
	}

	p21 := write("inv21.csv", "app,func,end_timestamp,duration\na,f,5,1\nb,g,2,1\na,f,3,1\n")
	src21, err := Open(p21, Window{})
	if err != nil {
		t.Fatal(err)
	}
	if src21.Format != FormatAzure2021 {
		t.Errorf("format %s", src21.Format)
	}
	f21, err := src21.Next()
	if err != nil {
		t.Fatal(err)
	}
	if f21.Name != "f" || len(f21.Invocations) != 2 || f21.Invocations[0].Start() != 2*time.Second {
		t.Errorf("2021 function %+v", f21)
	}

	bad := write("bad.csv", "HashFunction,minute_1\nf,x\n")
	src, err = Open(bad, Window{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Next()
	if err == nil || !strings.Contains(err.Error(), "bad.csv: line 2, column 3 (minute_1)") {
		t.Errorf("error %v: want the file, line, column and field", err)
	}
}
