package activator_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/activator"
	"github.com/thaw-dev/thaw/pkg/activator/concurrency"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

// BenchmarkHandler measures one request through the activator's handler
// chain and proxy to an in-process app over keep-alive loopback.
func BenchmarkHandler(b *testing.B) {
	logger := zap.NewNop().Sugar()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	defer app.Close()
	dest := strings.TrimPrefix(app.URL, "http://")
	thr := throttler.New("10.0.0.1", throttler.Options{}, clock.RealClock{}, logger)
	thr.UpsertRevision(rev, throttler.RevisionConfig{})
	thr.UpdateBackends(rev, throttler.Backends{Dests: []string{dest}})
	// The chain as cmd/activator builds it.
	act := activator.NewHandler(activator.Config{
		Throttler: thr,
		Proxy:     proxy.New(proxy.NewTransport(1000, 100), logger, proxy.Options{}),
		IsNotSent: func(error) bool { return false },
		Reporter:  concurrency.New("perf", nopSink{}, clock.RealClock{}, nil),
		Logger:    logger,
	})
	h := activator.Probes(nil, activator.LookupRevision(
		revs{&revisions.Info{ID: rev, Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second}},
		"", logger, activator.Instrument(activator.InstrumentConfig{}, act)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
		req.Header.Set("Knative-Serving-Revision", rev.Name)
		req.Header.Set("Knative-Serving-Namespace", rev.Namespace)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
