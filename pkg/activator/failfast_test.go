package activator

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

const pullFailure = `ImagePullBackOff: Back-off pulling image "example.com/nope"`

// TestFailFast: a new request for a revision at zero that cannot start gets 503 at once, with the
// reason and a Retry-After; one with a routable pod, or for a revision that can start, is served.
func TestFailFast(t *testing.T) {
	tests := []struct {
		name        string
		cannotStart string
		routable    func(types.NamespacedName) bool
		wantCode    int
		wantBody    string
	}{
		{name: "cannot start, at zero", cannotStart: pullFailure, routable: func(types.NamespacedName) bool { return false },
			wantCode: http.StatusServiceUnavailable, wantBody: "revision ns/rev cannot start: " + pullFailure},
		{name: "cannot start, but a pod is up", cannotStart: pullFailure, routable: func(types.NamespacedName) bool { return true },
			wantCode: http.StatusOK, wantBody: "proxied to 10.0.0.1:8012"},
		{name: "can start, at zero", routable: func(types.NamespacedName) bool { return false },
			wantCode: http.StatusOK, wantBody: "proxied to 10.0.0.1:8012"},
		{name: "fail fast off", cannotStart: pullFailure, wantCode: http.StatusOK, wantBody: "proxied to 10.0.0.1:8012"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info := testInfo()
			info.CannotStart = tc.cannotStart
			h := newTestHandler(t, &fakeThrottler{dests: []string{"10.0.0.1:8012"}}, okProxy, func(c *testConfig) {
				c.Revisions = fakeRevisions{testRev: info}
				c.Routable = tc.routable
			})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, revRequest(http.MethodGet))
			if rec.Code != tc.wantCode || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tc.wantCode, tc.wantBody)
			}
			if ra := rec.Header().Get("Retry-After"); (tc.wantCode == http.StatusServiceUnavailable) != (ra == "5") {
				t.Fatalf("Retry-After = %q", ra)
			}
		})
	}
}

// switchingRevisions serves the current Info, which the test swaps as the Revision's status changes.
type switchingRevisions struct{ info func() *revisions.Info }

func (s switchingRevisions) Get(string, string) (*revisions.Info, error) { return s.info(), nil }

// TestFailFastBuffered: requests already waiting when the revision reports it cannot start get the 503
// at once, and requests recover as soon as it can start again.
func TestFailFastBuffered(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	logger := zaptest.NewLogger(t).Sugar()
	thr := throttler.New("10.0.0.1", throttler.Options{}, clock.RealClock{}, logger)
	tr := proxy.NewTransport(10, 10)
	defer tr.CloseIdleConnections()
	var current atomic.Pointer[revisions.Info]
	current.Store(testInfo())
	setInfo := current.Store
	h := newChain(testConfig{Config: Config{Throttler: thr, Proxy: proxy.New(tr, logger, proxy.Options{}),
		Routable: thr.Routable, Logger: logger}, Revisions: switchingRevisions{current.Load}})
	act := httptest.NewServer(h)
	defer act.Close()

	thr.UpsertRevision(testRev, throttler.RevisionConfig{})
	const n = 3
	type answer struct {
		code        int
		body, retry string
	}
	answers := make(chan answer, n)
	for range n {
		go func() {
			code, body, hdr := get(t, act.URL)
			answers <- answer{code, body, hdr.Get("Retry-After")}
		}()
	}
	testutil.Eventually(t, "requests buffered", func() bool { q, _ := thr.Stats(testRev); return q == n })
	// The Revision informer reports the failure: main sets the Info and fails the waiters.
	failed := *testInfo()
	failed.CannotStart = pullFailure
	setInfo(&failed)
	thr.FailWaiting(testRev, &CannotStartError{Revision: testRev, Reason: pullFailure})
	for range n {
		a := <-answers
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, pullFailure) || a.retry != "5" {
			t.Fatalf("buffered request: %+v, want 503 with the reason and Retry-After 5", a)
		}
	}
	if code, body, _ := get(t, act.URL); code != http.StatusServiceUnavailable || !strings.Contains(body, pullFailure) {
		t.Fatalf("new request: %d %q, want 503 at once", code, body)
	}
	// It can start again: the next request waits for the pod and is served.
	setInfo(testInfo())
	go func() {
		code, body, hdr := get(t, act.URL)
		answers <- answer{code, body, hdr.Get("Retry-After")}
	}()
	testutil.Eventually(t, "request buffered", func() bool { q, _ := thr.Stats(testRev); return q == 1 })
	thr.UpdateBackends(testRev, throttler.Backends{Dests: []string{addr(backend)}})
	if a := <-answers; a.code != http.StatusOK {
		t.Fatalf("after recovery: %+v", a)
	}
}
