package runner

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/measure"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/report"
)

// newHTTPClient returns the client every side uses: its own transport, no proxy from the environment,
// a connection per concurrent request.
func newHTTPClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// fired is one request's client-side result before the other sources are read.
type fired struct {
	svc    *service
	sample report.Sample
	header string
}

// fire sends the first request to every service at once and waits for all answers. All goroutines
// wait on one gate so the requests leave together.
func (r *run) fire(ctx context.Context, svcs []*service, side string, level, round int) []fired {
	out := make([]fired, len(svcs))
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range svcs {
		out[i] = fired{svc: s, sample: report.Sample{Side: side, Level: level, Round: round, Service: s.Name, Revision: s.Revision}}
		wg.Go(func() {
			<-gate
			r.one(ctx, &out[i])
		})
	}
	close(gate)
	wg.Wait()
	return out
}

func (r *run) one(ctx context.Context, f *fired) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.o.Ingress+"/", nil)
	if err != nil {
		f.sample.Error = err.Error()
		return
	}
	req.Host = f.svc.Host
	// Thaw's activator answers with its timeline; upstream's ignores the header.
	req.Header.Set(measure.RequestHeader, "1")
	var firstByte time.Time
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotFirstResponseByte: func() { firstByte = r.o.Clock.Now() },
	}))
	f.sample.Send = r.o.Clock.Now()
	resp, err := r.http.Do(req)
	if err != nil {
		f.sample.Error = err.Error()
		return
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	f.sample.Status = resp.StatusCode
	f.sample.FirstByte = firstByte
	f.header = resp.Header.Get(measure.ResponseHeader)
	if err != nil {
		f.sample.Error = "reading body: " + err.Error()
	}
}
