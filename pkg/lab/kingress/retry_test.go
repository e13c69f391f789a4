package kingress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/activator/proxy"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// TestBodyRelayWhenBackendAnswersAtOnce guards against a race of the
// standard library: the backend answers as soon as it read the body, the
// server closes the request body when the response starts, and the
// transport's check for excess body bytes then fails and kills the
// connection mid-response. A plain httputil.ReverseProxy truncates about one
// response in a few hundred here.
func TestBodyRelayWhenBackendAnswersAtOnce(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "got:"+string(b))
	}))
	t.Cleanup(be.Close)
	svc := serviceFor(t, "ns", "rev", "http", be)
	svcs, _ := lister(t, svc)
	_, front := newTestProxy(t, svcs, nil, ingress("ns", "r", rule("", []string{"post.example.com"}, v1alpha1.HTTPIngressPath{
		Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev", servicePort(t, svc), 100)},
	})))
	body := strings.Repeat("x", 100000)
	for i := 0; i < 300; i++ {
		req, err := http.NewRequest("POST", front.URL, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "post.example.com"
		resp, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(b) != len(body)+4 {
			t.Fatalf("request %d: %d, response of %d bytes (%v), want 200 and %d", i, resp.StatusCode, len(b), err, len(body)+4)
		}
	}
}

// closedPort returns a loopback address nothing listens on (dials are
// refused) and a func that starts backend there.
func closedPort(t *testing.T) (string, func(*httptest.Server)) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr, func(s *httptest.Server) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("relisten on %s: %v", addr, err)
		}
		s.Listener = l
		s.Start()
		t.Cleanup(s.Close)
	}
}

// serviceAt is a Service whose ClusterIP:port is addr.
func serviceAt(t *testing.T, ns, name, portName, addr string) *corev1.Service {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: "127.0.0.1",
			Ports:     []corev1.ServicePort{{Name: portName, Port: int32(p), TargetPort: intstr.FromInt(p)}},
		},
	}
}

type result struct {
	code int
	body string
	err  error
}

// post sends body to host through front in the background.
func post(ctx context.Context, front *httptest.Server, host, body string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, "POST", front.URL, strings.NewReader(body))
		if err != nil {
			ch <- result{err: err}
			return
		}
		req.Host = host
		resp, err := front.Client().Do(req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- result{code: resp.StatusCode, body: string(b), err: err}
	}()
	return ch
}

// awaitWaiter waits until the proxy sleeps on the fake clock (a retry is
// scheduled), or the request ended.
func awaitWaiter(t *testing.T, fc *clocktesting.FakeClock, done <-chan result) (result, bool) {
	t.Helper()
	var r result
	ended := false
	testutil.Eventually(t, "the request to end or schedule a retry", func() bool {
		select {
		case r = <-done:
			ended = true
			return true
		default:
			return fc.HasWaiters()
		}
	})
	return r, ended
}

// A revision's Service that refuses connections at first (kube-proxy has
// not programmed it yet) is reached once it accepts, with the body intact.
func TestProxyRetriesDialUntilServiceAnswers(t *testing.T) {
	for _, portName := range []string{"http", "http2"} {
		t.Run(portName, func(t *testing.T) {
			addr, start := closedPort(t)
			svcs, _ := lister(t, serviceAt(t, "ns", "rev", portName, addr))
			fc := clocktesting.NewFakeClock(time.Now())
			_, front := newTestProxyWith(t, ProxyOptions{Services: svcs, Clock: fc}, ingress("ns", "r",
				rule("", []string{"late.example.com"}, v1alpha1.HTTPIngressPath{
					Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev", mustPort(t, addr), 100)},
				})))
			var calls atomic.Int32
			be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				b, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "proto=%d got:%s", r.ProtoMajor, b)
			}))
			be.Config.Protocols = new(http.Protocols)
			be.Config.Protocols.SetHTTP1(true)
			be.Config.Protocols.SetUnencryptedHTTP2(true)

			done := post(context.Background(), front, "late.example.com", "payload")
			if r, ended := awaitWaiter(t, fc, done); ended {
				t.Fatalf("request ended before any retry: %+v", r)
			}
			// kube-proxy caught up.
			start(be)
			fc.Step(retryInitialWait)
			r := <-done
			wantProto := 1
			if portName == "http2" {
				wantProto = 2
			}
			want := fmt.Sprintf("proto=%d got:payload", wantProto)
			if r.err != nil || r.code != http.StatusOK || r.body != want {
				t.Fatalf("got %+v, want 200 %q", r, want)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("backend saw %d requests, want 1", n)
			}
		})
	}
}

// A Service that keeps refusing gets a 502 once the retry budget is spent.
func TestProxyDialRetryIsBounded(t *testing.T) {
	addr, _ := closedPort(t)
	svcs, _ := lister(t, serviceAt(t, "ns", "dead", "http", addr))
	fc := clocktesting.NewFakeClock(time.Now())
	_, front := newTestProxyWith(t, ProxyOptions{Services: svcs, Clock: fc, DialRetryBudget: 5 * time.Second}, ingress("ns", "r",
		rule("", []string{"dead.example.com"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "dead", mustPort(t, addr), 100)},
		})))
	done := post(context.Background(), front, "dead.example.com", "x")
	steps := 0
	for {
		r, ended := awaitWaiter(t, fc, done)
		if ended {
			if r.err != nil || r.code != http.StatusBadGateway {
				t.Fatalf("got %+v, want 502", r)
			}
			break
		}
		// Each wait is at most retryMaxWait; a second per step makes the
		// count exact: retries at 1..4 s, none may start at 5 s.
		fc.Step(time.Second)
		steps++
		if steps > 10 {
			t.Fatal("still retrying after 10 s of budget 5 s")
		}
	}
	if steps != 5 {
		t.Errorf("gave up after %d retries, want 5", steps)
	}
}

// A client that leaves during the backoff ends the retries. (The request has
// no body: the HTTP/1 server notices a client leaving only once the body
// was read; a request whose body is never read waits out the budget.)
func TestProxyDialRetryStopsWithClient(t *testing.T) {
	addr, _ := closedPort(t)
	svcs, _ := lister(t, serviceAt(t, "ns", "dead", "http", addr))
	fc := clocktesting.NewFakeClock(time.Now())
	_, front := newTestProxyWith(t, ProxyOptions{Services: svcs, Clock: fc}, ingress("ns", "r",
		rule("", []string{"dead.example.com"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "dead", mustPort(t, addr), 100)},
		})))
	ctx, cancel := context.WithCancel(context.Background())
	done := post(ctx, front, "dead.example.com", "")
	if r, ended := awaitWaiter(t, fc, done); ended {
		t.Fatalf("request ended before any retry: %+v", r)
	}
	cancel()
	if r := <-done; r.err == nil {
		t.Fatalf("cancelled request got %+v", r)
	}
	if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return !fc.HasWaiters(), nil }); err != nil {
		t.Fatal("retry still waiting after the client left")
	}
}

// A request that reached the backend is never sent again, even when the
// connection then breaks.
func TestProxyNoRetryOnceSent(t *testing.T) {
	var calls atomic.Int32
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.ReadAll(r.Body)
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	}))
	t.Cleanup(be.Close)
	svc := serviceFor(t, "ns", "rev", "http", be)
	svcs, _ := lister(t, svc)
	fc := clocktesting.NewFakeClock(time.Now())
	_, front := newTestProxyWith(t, ProxyOptions{Services: svcs, Clock: fc}, ingress("ns", "r",
		rule("", []string{"once.example.com"}, v1alpha1.HTTPIngressPath{
			Splits: []v1alpha1.IngressBackendSplit{split("ns", "rev", servicePort(t, svc), 100)},
		})))
	r, ended := awaitWaiter(t, fc, post(context.Background(), front, "once.example.com", "once"))
	if !ended {
		t.Fatal("a request that reached the backend is being retried")
	}
	if r.err != nil || r.code != http.StatusBadGateway {
		t.Fatalf("got %+v, want 502", r)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1", n)
	}
}

func TestNotSent(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}
	readErr := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	body := func(b io.Reader, read bool) *proxy.TrackedBody {
		tb := proxy.TrackBody(httptest.NewRequest("POST", "/", b))
		if read {
			tb.Read(make([]byte, 1))
		}
		return tb
	}
	for _, tc := range []struct {
		name string
		body *proxy.TrackedBody
		err  error
		want bool
	}{
		{"dial, no body", body(nil, false), dialErr, true},
		{"dial, wrapped", body(nil, false), fmt.Errorf("proxy: %w", dialErr), true},
		{"dial, body untouched", body(strings.NewReader("b"), false), dialErr, true},
		{"dial, body read", body(strings.NewReader("b"), true), dialErr, false},
		{"after dial", body(nil, false), readErr, false},
		{"other", body(nil, false), errors.New("boom"), false},
	} {
		if got := notSent(tc.body, tc.err); got != tc.want {
			t.Errorf("%s: notSent = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func mustPort(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return p
}
