package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	seq := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(i+1) * time.Millisecond
		}
		return out
	}
	cases := []struct {
		n    int
		p    float64
		want time.Duration
	}{
		{0, 0.5, 0},
		{1, 0.5, time.Millisecond},
		{1, 0.99, time.Millisecond},
		{2, 0.5, time.Millisecond},
		{4, 0.5, 2 * time.Millisecond},
		{10, 0.9, 9 * time.Millisecond},
		{100, 0.5, 50 * time.Millisecond},
		{100, 0.95, 95 * time.Millisecond},
		{100, 0.99, 99 * time.Millisecond},
		{50, 0.99, 50 * time.Millisecond},
		{100, 1, 100 * time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(seq(c.n), c.p); got != c.want {
			t.Errorf("Percentile(1..%d ms, %v) = %v, want %v", c.n, c.p, got, c.want)
		}
	}
	q := Summarize([]time.Duration{5, 1, 4, 2, 3})
	if q.N != 5 || q.P50 != 3 || q.Max != 5 || q.P99 != 5 {
		t.Errorf("Summarize = %+v", q)
	}
}

var t0 = time.Date(2026, 11, 26, 19, 40, 0, 0, time.UTC)

func at(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }

// sample is a cold start with request→scale a, scale→qp_up b, qp_up→first byte c (ms).
func sample(side string, level int, a, b, c float64) Sample {
	return Sample{Side: side, Level: level, Service: "cs-000", Revision: "cs-000-00001", Status: 200,
		Send: at(0), Scale: at(a), ScaleSource: "audit", QPUp: at(a + b), PodReady: at(a + b + c + 300), FirstByte: at(a + b + c)}
}

func TestPhases(t *testing.T) {
	s := sample("thaw", 1, 8, 400, 12)
	s.Thaw = &ThawTimes{Arrival: at(1), PokeSent: at(1.2), Decided: at(1.5), ScaleWritten: at(3), PodReady: at(415), FirstByte: at(419)}
	want := map[string]time.Duration{
		RequestToScale: 8 * time.Millisecond, ScaleToQPUp: 400 * time.Millisecond, QPUpToFirstByte: 12 * time.Millisecond,
		Total: 420 * time.Millisecond, Knative: 20 * time.Millisecond,
		ThawArrivalPoke: 200 * time.Microsecond, ThawPokeDecide: 300 * time.Microsecond,
		ThawDecideScale: 1500 * time.Microsecond, ThawReadyToFirst: 4 * time.Millisecond,
	}
	for _, p := range Phases {
		d, ok := p.Of(&s)
		if !ok || d != want[p.Name] {
			t.Errorf("%s = %v %v, want %v", p.Name, d, ok, want[p.Name])
		}
	}
	// Missing instants leave their phases out; warm answers have no Thaw phases.
	m := sample("upstream", 1, 8, 400, 12)
	m.QPUp = time.Time{}
	m.Thaw = &ThawTimes{Warm: true}
	for _, p := range Phases {
		_, ok := p.Of(&m)
		wantOK := p.Name == RequestToScale || p.Name == Total
		if ok != wantOK {
			t.Errorf("%s present = %v, want %v", p.Name, ok, wantOK)
		}
	}
	// Failed requests count in no phase.
	f := sample("upstream", 1, 8, 400, 12)
	f.Status = 503
	if v := (Phase{Of: Phases[0].Of}).Values([]Sample{f}); len(v) != 0 {
		t.Errorf("failed sample counted: %v", v)
	}
}

func compareSamples() []Sample {
	var ss []Sample
	for i := range 10 {
		ss = append(ss, sample("upstream", 5, 10+float64(i), 400, 10))
		ss = append(ss, sample("thaw", 5, 1+float64(i)/10, 400, 1))
	}
	ss = append(ss, sample("upstream", 1, 10, 400, 10), sample("thaw", 1, 2, 400, 2))
	bad := sample("thaw", 1, 2, 400, 2)
	bad.Status, bad.Error = 0, "context deadline exceeded"
	return append(ss, bad)
}

func TestWriteTableRatios(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, compareSamples()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{"parallel 1", "parallel 5", "thaw/upstream", "failed", "1/2"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Level 1 request→scale: upstream 10 ms, thaw 2 ms → 0.20 at every percentile.
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 7 && f[0] == RequestToScale && f[1] == "thaw/upstream" && f[2] == "0.20" && f[6] == "0.20" {
			found = true
			break
		}
	}
	if !found {
		t.Errorf("no request→scale ratio 0.20 line:\n%s", out)
	}
	if idx1, idx5 := strings.Index(out, "parallel 1"), strings.Index(out, "parallel 5"); idx1 > idx5 {
		t.Error("levels not ascending")
	}
}

func TestWriteCSVShape(t *testing.T) {
	ss := compareSamples()
	ss[0].Thaw = &ThawTimes{Arrival: at(1), PokeSent: at(2)}
	var b bytes.Buffer
	if err := WriteCSV(&b, ss); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(ss)+1 {
		t.Fatalf("%d records, want %d", len(recs), len(ss)+1)
	}
	h := recs[0]
	col := map[string]int{}
	for i, name := range h {
		col[name] = i
	}
	for _, r := range recs {
		if len(r) != len(h) {
			t.Fatalf("record of %d fields, header %d", len(r), len(h))
		}
	}
	r := recs[1]
	if r[col["side"]] != "upstream" || r[col["t_send"]] != "1795722000000000000" || r[col["total ms"]] != "420.000" ||
		r[col["thaw_arrival"]] != "1795722000001000000" || r[col["thaw_scale_written"]] != "" || r[col["knative ms"]] != "20.000" {
		t.Errorf("first record: %v", r)
	}
	last := recs[len(recs)-1]
	if last[col["error"]] != "context deadline exceeded" || last[col["total ms"]] != "404.000" {
		// The CSV keeps every instant of a failed sample: only the tables leave it out.
		t.Errorf("failed record: %v", last)
	}
}

func TestWriteJSONShape(t *testing.T) {
	ss := compareSamples()
	var b bytes.Buffer
	if err := WriteJSON(&b, "thaw coldstart --compare", t0, t0.Add(time.Minute), ss); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Command string
		Samples []map[string]any
		Summary []struct {
			Side, Phase string
			Level       int
			Quantiles   map[string]int64
		}
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Command != "thaw coldstart --compare" || len(doc.Samples) != len(ss) {
		t.Fatalf("doc: %q, %d samples", doc.Command, len(doc.Samples))
	}
	if _, ok := doc.Samples[0]["thaw"]; ok {
		t.Error("a sample without Thaw times must omit them")
	}
	if _, ok := doc.Samples[0]["scaleReceived"]; ok {
		t.Error("zero times are omitted")
	}
	ok := false
	for _, r := range doc.Summary {
		if r.Side == "thaw" && r.Level == 1 && r.Phase == Total {
			ok = r.Quantiles["n"] == 1 && r.Quantiles["p50"] == int64(404*time.Millisecond)
		}
	}
	if !ok {
		t.Errorf("summary lacks thaw level 1 total = 404ms: %+v", doc.Summary)
	}
}

func TestWritePlot(t *testing.T) {
	ss := compareSamples()
	var svg bytes.Buffer
	if err := WritePlot(&svg, ss, SVG); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML with an <svg> root, and the legend names both sides.
	dec := xml.NewDecoder(bytes.NewReader(svg.Bytes()))
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	for _, want := range []string{"upstream", "thaw", "Knative-attributable"} {
		if !bytes.Contains(svg.Bytes(), []byte(want)) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if dir := os.Getenv("THAW_PLOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "plot.svg"), svg.Bytes(), 0o644)
	}
	var pngb bytes.Buffer
	if err := WritePlot(&pngb, ss, PNG); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("THAW_PLOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "plot.png"), pngb.Bytes(), 0o644)
	}
	img, err := png.Decode(&pngb)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("PNG is %v", b)
	}
	if err := WritePlot(io.Discard, nil, SVG); err != nil {
		t.Errorf("no samples: %v", err)
	}
	if err := WritePlot(io.Discard, ss, "gif"); err == nil {
		t.Error("unknown format must fail")
	}
}
