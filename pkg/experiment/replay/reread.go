package replay

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ReadRun reads back a cluster run from the files it wrote in dir
// (requests.csv and the lab rows of replay.csv) for the plan it ran, so
// that its comparison with the simulation can be made again, with another
// model, without running the cluster again. The plan must be the run's
// (same trace, window, functions, speed, spread and seed): a request of a
// function the plan does not have, or an arrival past its end, is an error.
func ReadRun(dir string, p *Plan) (*LabResult, error) {
	fn := map[string]int{}
	for i, f := range p.Functions {
		fn[f.Name] = i
	}
	res := &LabResult{Pods: map[runKey][]PodStats{}}
	if err := readCSV(filepath.Join(dir, "requests.csv"), func(line int, c col) error {
		o := Outcome{Side: c.s("side"), Policy: c.s("policy"), Service: c.s("service"), Header: c.s("header"),
			Error: c.s("error"), ColdBy: c.s("cold_by")}
		name := c.s("function")
		if c.err != nil {
			return c.err
		}
		i, ok := fn[name]
		if !ok {
			return fmt.Errorf("function %q is not in the plan", name)
		}
		o.Fn = i
		o.Arrival = c.i("arrival")
		if o.Arrival < 0 || o.Arrival >= len(p.Arrivals) || p.Arrivals[o.Arrival].Fn != i {
			return fmt.Errorf("arrival %d is not one of function %q in the plan", o.Arrival, c.s("function"))
		}
		if ns := c.s("sent_unix_ns"); ns != "" {
			n, err := strconv.ParseInt(ns, 10, 64)
			if err != nil {
				return fmt.Errorf("sent_unix_ns: %w", err)
			}
			o.Sent = time.Unix(0, n)
		}
		o.Late, o.Sleep, o.Latency = c.ms("late_ms"), c.ms("sleep_ms"), c.ms("latency_ms")
		o.Status, o.ReadyPods, o.Replicas = c.i("status"), c.i("ready_pods"), int32(c.i("replicas"))
		o.Cold = c.s("cold") == "true"
		if c.err != nil {
			return c.err
		}
		if !containsString(res.Sides, o.Side) {
			res.Sides = append(res.Sides, o.Side)
		}
		if !o.Sent.IsZero() {
			if res.Started.IsZero() || o.Sent.Before(res.Started) {
				res.Started = o.Sent
			}
			if end := o.Sent.Add(o.Latency); end.After(res.Finished) {
				res.Finished = end
			}
		}
		res.Outcomes = append(res.Outcomes, o)
		return nil
	}); err != nil {
		return nil, err
	}
	if len(res.Outcomes) == 0 {
		return nil, fmt.Errorf("%s: no request", filepath.Join(dir, "requests.csv"))
	}
	err := readCSV(filepath.Join(dir, "replay.csv"), func(line int, c col) error {
		side, pol, ok := strings.Cut(c.s("policy"), "/")
		if !ok || !containsString(res.Sides, side) {
			return c.err // a simulation's row
		}
		name := c.s("function")
		if c.err != nil {
			return c.err
		}
		i, ok := fn[name]
		if !ok {
			return fmt.Errorf("function %q is not in the plan", name)
		}
		k := runKey{side, pol}
		if res.Pods[k] == nil {
			res.Pods[k] = make([]PodStats, len(p.Functions))
		}
		res.Pods[k][i] = PodStats{ScaleUps: c.i("cold_starts"), PodSeconds: c.f("pod_s")}
		return c.err
	})
	return res, err
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// col reads the named fields of one CSV record; the first bad field sets
// err.
type col struct {
	idx map[string]int
	rec []string
	err error
}

func (c *col) s(name string) string {
	i, ok := c.idx[name]
	if !ok || i >= len(c.rec) {
		if c.err == nil {
			c.err = fmt.Errorf("no column %q", name)
		}
		return ""
	}
	return c.rec[i]
}

func (c *col) f(name string) float64 {
	v, err := strconv.ParseFloat(c.s(name), 64)
	if err != nil && c.err == nil {
		c.err = fmt.Errorf("%s: %w", name, err)
	}
	return v
}

func (c *col) i(name string) int {
	v, err := strconv.Atoi(c.s(name))
	if err != nil && c.err == nil {
		c.err = fmt.Errorf("%s: %w", name, err)
	}
	return v
}

func (c *col) ms(name string) time.Duration {
	return time.Duration(c.f(name) * float64(time.Millisecond))
}

// readCSV calls row for each record of the file after its header; errors
// name the file and line.
func readCSV(path string, row func(line int, c col) error) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	r := csv.NewReader(fh)
	r.ReuseRecord = true
	head, err := r.Read()
	if err != nil {
		return fmt.Errorf("%s: header: %w", path, err)
	}
	idx := map[string]int{}
	for i, h := range head {
		idx[h] = i
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := row(line, col{idx: idx, rec: rec}); err != nil {
			return fmt.Errorf("%s:%d: %w", path, line, err)
		}
	}
}
