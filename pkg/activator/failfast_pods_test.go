package activator

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	"github.com/thaw-dev/thaw/pkg/activator/revisions"
	"github.com/thaw-dev/thaw/pkg/activator/throttler"
)

// recordingWaiters records FailWaiting calls.
type recordingWaiters struct {
	routable bool
	failed   []error
}

func (r *recordingWaiters) Routable(types.NamespacedName) bool { return r.routable }
func (r *recordingWaiters) FailWaiting(_ types.NamespacedName, err error) {
	r.failed = append(r.failed, err)
}

func TestFailIfCannotStart(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cannotStart string
		routable    bool
		want        bool
	}{
		{name: "cannot start, at zero", cannotStart: "CrashLoopBackOff: back-off 10s", want: true},
		{name: "cannot start, a pod routable here", cannotStart: "CrashLoopBackOff", routable: true},
		{name: "can start", routable: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &recordingWaiters{routable: tc.routable}
			info := testInfo()
			info.CannotStart = tc.cannotStart
			if got := FailIfCannotStart(w, info); got != tc.want || (len(w.failed) == 1) != tc.want {
				t.Fatalf("FailIfCannotStart = %v with %v, want %v", got, w.failed, tc.want)
			}
			if tc.want && !strings.Contains(w.failed[0].Error(), tc.cannotStart) {
				t.Fatalf("error %q lacks the reason", w.failed[0])
			}
		})
	}
}

// activeCondition sets the Revision's Active condition as upstream's revision reconciler copies it
// from the PodAutoscaler (Thaw's autoscaler names the pods' reason there while it activates).
func activeCondition(r *servingv1.Revision, status corev1.ConditionStatus, reason, msg string) {
	r.Status.Conditions = []apis.Condition{
		{Type: servingv1.RevisionConditionReady, Status: corev1.ConditionTrue},
		{Type: servingv1.RevisionConditionResourcesAvailable, Status: corev1.ConditionTrue},
		{Type: servingv1.RevisionConditionContainerHealthy, Status: corev1.ConditionTrue},
		{Type: servingv1.RevisionConditionActive, Status: status, Reason: reason, Message: msg},
	}
}

// TestFailFastFromPodReasons runs the Revision informer, the real Throttler and the handler on a fake
// clock that never moves, so no timeout can answer: requests buffered for a revision at zero get the
// 503 with the reason and Retry-After as soon as the Revision says its pods cannot pull their image,
// new ones get it at once, and once the pods can start again requests wait for the pod and are served.
func TestFailFastFromPodReasons(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := zaptest.NewLogger(t).Sugar()
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()

	rev := &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{Namespace: testRev.Namespace, Name: testRev.Name, UID: "uid-1"}}
	activeCondition(rev, corev1.ConditionFalse, "NoTraffic", "The target is not receiving traffic.")
	client := servingfake.NewSimpleClientset(rev)
	setActive := func(status corev1.ConditionStatus, reason, msg string) {
		t.Helper()
		r := rev.DeepCopy()
		activeCondition(r, status, reason, msg)
		if _, err := client.ServingV1().Revisions(r.Namespace).UpdateStatus(ctx, r, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	thr := throttler.New("10.0.0.1", throttler.Options{}, clk, logger)
	store := revisions.NewStore(client, 0, logger)
	store.OnUpsert(func(i *revisions.Info) {
		thr.UpsertRevision(i.ID, throttler.RevisionConfig{ContainerConcurrency: i.ContainerConcurrency})
		FailIfCannotStart(thr, i)
	})
	go store.Run(ctx)
	if !store.WaitForSync(ctx) {
		t.Fatal("revision informer never synced")
	}
	tr := proxy.NewTransport(10, 10)
	defer tr.CloseIdleConnections()
	h := newChain(testConfig{Config: Config{Throttler: thr, Proxy: proxy.New(tr, logger, proxy.Options{}),
		Routable: thr.Routable, Logger: logger}, Revisions: store, Clock: clk})
	act := httptest.NewServer(h)
	defer act.Close()
	// Requests still held when the test fails end first, or Close would wait for them.
	reqCtx, endRequests := context.WithCancel(ctx)
	defer endRequests()

	type answer struct {
		code        int
		body, retry string
	}
	answers := make(chan answer, 8)
	send := func() {
		go func() {
			req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, act.URL, nil)
			resp, err := http.DefaultClient.Do(withRev(req))
			if err != nil {
				answers <- answer{body: err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answers <- answer{resp.StatusCode, string(b), resp.Header.Get("Retry-After")}
		}()
	}
	// next is the next answer; the guard is wall time only so that the code before fail-fast, which
	// holds the requests until a timeout the fake clock never reaches, fails instead of hanging.
	next := func(what string) answer {
		t.Helper()
		select {
		case a := <-answers:
			return a
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no answer (held for its timeout?)", what)
			return answer{}
		}
	}
	const n = 3
	for range n {
		send()
	}
	testutil.Eventually(t, "requests buffered", func() bool { q, _ := thr.Stats(testRev); return q == n })

	const reason = "ErrImagePull"
	const msg = `container user-container: failed to resolve reference "ko.local/nope:v1": no such host`
	setActive(corev1.ConditionUnknown, reason, msg)
	for range n {
		a := next("buffered request")
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "revision ns/rev cannot start: "+reason+": "+msg) ||
			a.retry != "5" {
			t.Fatalf("buffered request: %+v, want 503 with the reason and Retry-After 5", a)
		}
	}
	send()
	if a := next("new request"); a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, reason) {
		t.Fatalf("new request: %+v, want 503 at once", a)
	}

	// The kubelet pulls the image: Thaw's autoscaler says Queued again, requests wait and are served.
	setActive(corev1.ConditionUnknown, "Queued", "Requests to the target are being buffered as resources are provisioned.")
	testutil.Eventually(t, "the Revision's recovery seen", func() bool {
		i, err := store.Get(testRev.Namespace, testRev.Name)
		return err == nil && i.CannotStart == ""
	})
	send()
	testutil.Eventually(t, "request buffered", func() bool { q, _ := thr.Stats(testRev); return q == 1 })
	thr.UpdateBackends(testRev, throttler.Backends{Dests: []string{addr(backend)}})
	if a := next("request after recovery"); a.code != http.StatusOK || a.body != "ok" {
		t.Fatalf("after recovery: %+v, want 200", a)
	}
}
