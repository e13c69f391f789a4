package upstream

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Result is one top-level test of an upstream suite run.
type Result struct {
	Test     string
	Status   string // PASS, FAIL, SKIP, or NORESULT when it started but never reported (timeout, panic)
	Duration time.Duration
}

// NoResult marks a test that started but whose binary ended before it reported.
const NoResult = "NORESULT"

var (
	// go test -v's verdict of a top-level test: no indentation (subtests are indented).
	verdictRE = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (Test[^\s/]*) \(([0-9.]+)s\)`)
	// A subtest's verdict: a parent whose subtests run in parallel reports 0s itself, so the
	// longest subtest stands for its time.
	subVerdictRE = regexp.MustCompile(`^\s+--- (?:PASS|FAIL|SKIP): (Test[^\s/]*)/\S+ \(([0-9.]+)s\)`)
	// A top-level test starting: "=== RUN   TestX" (subtests have a slash).
	runRE = regexp.MustCompile(`^=== RUN\s+(Test[^\s/]*)\s*$`)
)

// Collector is an io.Writer that passes a suite's output through to Out line by line while it reads
// the verdicts of top-level tests. Safe for the concurrent writes of a command's stdout and stderr.
type Collector struct {
	Out io.Writer

	mu      sync.Mutex
	partial []byte
	started []string
	results map[string]Result
	longest map[string]time.Duration // parent → its longest subtest
}

// Write implements io.Writer.
func (c *Collector) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.line(string(c.partial[:i]))
		c.partial = c.partial[i+1:]
	}
	if c.Out != nil {
		if _, err := c.Out.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *Collector) line(l string) {
	l = strings.TrimRight(l, "\r")
	if c.results == nil {
		c.results = map[string]Result{}
	}
	if m := runRE.FindStringSubmatch(l); m != nil {
		if _, seen := c.results[m[1]]; !seen && !contains(c.started, m[1]) {
			c.started = append(c.started, m[1])
		}
		return
	}
	if m := subVerdictRE.FindStringSubmatch(l); m != nil {
		d, _ := time.ParseDuration(m[2] + "s")
		if c.longest == nil {
			c.longest = map[string]time.Duration{}
		}
		c.longest[m[1]] = max(c.longest[m[1]], d)
		return
	}
	if m := verdictRE.FindStringSubmatch(l); m != nil {
		d, _ := time.ParseDuration(m[3] + "s")
		c.results[m[2]] = Result{Test: m[2], Status: m[1], Duration: d}
		if !contains(c.started, m[2]) {
			c.started = append(c.started, m[2])
		}
	}
}

// Results lists the top-level tests in the order they started; those without a verdict are
// NoResult.
func (c *Collector) Results() []Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.line(string(c.partial))
		c.partial = nil
	}
	out := make([]Result, 0, len(c.started))
	for _, t := range c.started {
		r, ok := c.results[t]
		if !ok {
			r = Result{Test: t, Status: NoResult}
		}
		r.Duration = max(r.Duration, c.longest[t])
		out = append(out, r)
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Row is one line of the tier's summary: a suite run at a side and shape.
type Row struct {
	Side, Shape, Suite string
	Result
}

// Summary renders rows as a Markdown table, sorted by side (in run order), shape, suite and test
// order as given, then the wall time.
func Summary(rows []Row, wall time.Duration) string {
	var b strings.Builder
	b.WriteString("| side | shape | suite | test | result | time |\n| --- | --- | --- | --- | --- | --- |\n")
	rs := append([]Row(nil), rows...)
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].Side != rs[j].Side {
			return rs[i].Side == SideUpstream
		}
		return false
	})
	pass, fail := 0, 0
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Side, r.Shape, r.Suite, r.Test, r.Status, r.Duration.Round(10*time.Millisecond))
		if r.Status == "PASS" {
			pass++
		} else if r.Status != "SKIP" {
			fail++
		}
	}
	fmt.Fprintf(&b, "\n%d passed, %d not passed; wall time %s\n", pass, fail, wall.Round(time.Second))
	return b.String()
}

// Diverging lists the tests that passed with upstream's components and did not with Thaw's at the
// same shape and suite: the regressions the tier exists to find.
func Diverging(rows []Row) []Row {
	up := map[string]string{}
	for _, r := range rows {
		if r.Side == SideUpstream {
			up[r.Shape+"/"+r.Suite+"/"+r.Test] = r.Status
		}
	}
	var out []Row
	for _, r := range rows {
		if r.Side == SideThaw && r.Status != "PASS" && r.Status != "SKIP" && up[r.Shape+"/"+r.Suite+"/"+r.Test] == "PASS" {
			out = append(out, r)
		}
	}
	return out
}
