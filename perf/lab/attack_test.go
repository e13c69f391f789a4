//go:build e2e

package lab

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// attack describes one constant-rate vegeta run.
type attack struct {
	target vegeta.Target
	rate   int
	dur    time.Duration
	// timeout bounds each request (upstream's benchmarks use 30 s).
	timeout time.Duration
	// cut cancels the requests still in flight when dur ends (they count as errors, code 0), so an
	// overloaded queue does not keep the run going for the revision timeout.
	cut bool
}

// run offers the load and returns every request's outcome.
func (a attack) run(ctx context.Context) []Sample {
	cutCtx, cutNow := context.WithCancel(ctx)
	defer cutNow()
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 20000,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: cutTransport{rt: tr, cut: cutCtx}, Timeout: a.timeout}
	atk := vegeta.NewAttacker(vegeta.Client(cl), vegeta.MaxBody(4096))
	began := time.Now()
	results := atk.Attack(vegeta.NewStaticTargeter(a.target), vegeta.ConstantPacer{Freq: a.rate, Per: time.Second}, a.dur, "")
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	if a.cut {
		t := time.AfterFunc(a.dur, cutNow)
		defer t.Stop()
	}
	out := make([]Sample, 0, a.rate*int(a.dur/time.Second)+16)
	for r := range results {
		out = append(out, Sample{Start: r.Timestamp.Sub(began), Latency: r.Latency, Code: int(r.Code), Err: r.Error})
	}
	return out
}

// cutTransport ties every request to cut as well as to its own context.
type cutTransport struct {
	rt  http.RoundTripper
	cut context.Context
}

func (c cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(c.cut, cancel)
	resp, err := c.rt.RoundTrip(r.WithContext(ctx))
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	resp.Body = &doneBody{ReadCloser: resp.Body, done: func() { stop(); cancel() }}
	return resp, nil
}

// doneBody releases the request's context once the body is closed.
type doneBody struct {
	io.ReadCloser
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}
