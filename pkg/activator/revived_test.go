package activator

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

// staleRevisions answers with an Info looked up before the revision was deleted: the request raced
// the deletion.
type staleRevisions struct{ info *revisions.Info }

func (s staleRevisions) Get(string, string) (*revisions.Info, error) { return s.info, nil }

// blockingProxy answers 200 once released.
type blockingProxy struct{ entered, release chan struct{} }

func (p blockingProxy) Serve(w http.ResponseWriter, r *http.Request, _ proxy.Target) error {
	close(p.entered)
	<-p.release
	io.WriteString(w, "ok")
	return nil
}

// revisionSeries counts the exported series that name rev.
func revisionSeries(t *testing.T, g prometheus.Gatherer, rev types.NamespacedName) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kn_revision_name" && l.GetValue() == rev.Name {
					n++
				}
			}
		}
	}
	return n
}

// TestDeletedRevisionStaysDeleted wires the store, throttler and metrics as the activator's main does
// and deletes the revision under a request: neither a request that looked the revision up just before
// the deletion nor one in flight across it may bring back its throttler entry or metric series, which
// nothing would ever delete again.
func TestDeletedRevisionStaysDeleted(t *testing.T) {
	tests := []struct {
		name string
		// inFlight: the request is proxied when the deletion comes; otherwise it arrives after it,
		// holding an Info looked up before.
		inFlight bool
		wantCode int
	}{
		{name: "looked up before the deletion", wantCode: http.StatusNotFound},
		{name: "in flight across the deletion", inFlight: true, wantCode: http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			logger := zaptest.NewLogger(t).Sugar()
			client := fake.NewSimpleClientset(&servingv1.Revision{ObjectMeta: metav1.ObjectMeta{
				Namespace: testRev.Namespace, Name: testRev.Name, UID: "uid-1"}})
			store := revisions.NewStore(client, 0, logger)
			thr := throttler.New("10.0.0.1", throttler.Options{}, clock.RealClock{}, logger)
			reg := prometheus.NewRegistry()
			metrics := NewMetrics(reg)
			deleted := make(chan struct{})
			store.OnUpsert(func(i *revisions.Info) {
				thr.UpsertRevision(i.ID, throttler.RevisionConfig{ContainerConcurrency: i.ContainerConcurrency})
			})
			store.OnDelete(func(id types.NamespacedName) {
				thr.DeleteRevision(id)
				metrics.DeleteRevision(id)
				close(deleted)
			})
			go store.Run(ctx)
			if !store.WaitForSync(ctx) {
				t.Fatal("store did not sync")
			}
			info, err := store.Get(testRev.Namespace, testRev.Name)
			if err != nil {
				t.Fatal(err)
			}
			thr.UpdateBackends(testRev, throttler.Backends{Dests: []string{"10.0.0.9:8012"}})
			p := blockingProxy{entered: make(chan struct{}), release: make(chan struct{})}
			h := newChain(testConfig{Config: Config{Throttler: thr, Proxy: p, Logger: logger},
				InstrumentConfig: InstrumentConfig{Metrics: metrics}, Revisions: staleRevisions{info}})
			deleteRev := func() {
				if err := client.ServingV1().Revisions(testRev.Namespace).Delete(ctx, testRev.Name, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				select {
				case <-deleted:
				case <-time.After(10 * time.Second):
					t.Fatal("the deletion was not handled")
				}
			}

			rec := httptest.NewRecorder()
			req := withRev(httptest.NewRequest(http.MethodGet, "/", nil))
			if tc.inFlight {
				done := make(chan struct{})
				go func() { h.ServeHTTP(rec, req); close(done) }()
				<-p.entered
				deleteRev()
				close(p.release)
				<-done
			} else {
				deleteRev()
				close(p.release)
				h.ServeHTTP(rec, req)
			}
			if rec.Code != tc.wantCode {
				t.Errorf("code = %d, want %d", rec.Code, tc.wantCode)
			}
			if n := thr.Len(); n != 0 {
				t.Errorf("throttler holds %d revisions after the deletion, want 0", n)
			}
			if n := revisionSeries(t, reg, testRev); n != 0 {
				t.Errorf("%d metric series of the deleted revision, want 0", n)
			}
		})
	}
}
