package activator

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/thaw-dev/thaw/pkg/activator/proxy"
)

// activatorServer serves the real handler chain with the real proxy on
// loopback, speaking HTTP/1.1 and h2c like :8012.
func activatorServer(t *testing.T, dests []string, mod func(*testConfig)) (*httptest.Server, *fakeThrottler, *proxy.Transport) {
	t.Helper()
	tr := proxy.NewTransport(100, 10)
	t.Cleanup(tr.CloseIdleConnections)
	th := &fakeThrottler{dests: dests}
	h := newTestHandler(t, th, proxy.New(tr, zaptest.NewLogger(t).Sugar(), proxy.Options{}), mod)
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return s, th, tr
}

func h2cServer(t *testing.T, h http.Handler) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func addr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func withRev(r *http.Request) *http.Request {
	r.Header.Set(proxy.RevisionHeader, testRev.Name)
	r.Header.Set(proxy.NamespaceHeader, testRev.Namespace)
	return r
}

func TestHTTP1AndH2C(t *testing.T) {
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.Header.Get(proxy.ProxyHeader)+" "+r.Header.Get(proxy.RevisionHeader))
	}))
	act, _, tr := activatorServer(t, []string{addr(backend)}, nil)
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   string
	}{
		{"http1", http.DefaultClient, "HTTP/1.1 activator "},
		{"h2c", &http.Client{Transport: tr.H2C}, "HTTP/2.0 activator "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, act.URL, nil)
			resp, err := tc.client.Do(withRev(req))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != tc.want {
				t.Fatalf("got %d %q, want %q", resp.StatusCode, b, tc.want)
			}
		})
	}
}

func TestGRPCUnaryAndStreaming(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	act, _, _ := activatorServer(t, []string{lis.Addr().String()}, nil)
	conn, err := grpc.NewClient(addr(act), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "knative-serving-revision", testRev.Name, "knative-serving-namespace", testRev.Namespace)
	client := healthpb.NewHealthClient(conn)

	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary: %v %v", resp, err)
	}
	// A grpc-status trailer must come through: an unknown service is NOT_FOUND.
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("unary error status lost: %v", err)
	}

	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	// Each update must arrive while the stream stays open.
	for _, want := range []healthpb.HealthCheckResponse_ServingStatus{
		healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING,
	} {
		m, err := stream.Recv()
		if err != nil || m.Status != want {
			t.Fatalf("stream: got %v %v, want %v", m, err, want)
		}
		if want == healthpb.HealthCheckResponse_SERVING {
			hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
		} else {
			hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
		}
	}
}

func TestWebsocketThroughActivator(t *testing.T) {
	up := websocket.Upgrader{}
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte("echo:"), m...))
		}
	}))
	act, _, _ := activatorServer(t, []string{addr(backend)}, func(c *testConfig) {
		info := testInfo()
		info.IdleTimeout = 300 * time.Millisecond // must not apply once the connection is upgraded
		c.Revisions = fakeRevisions{testRev: info}
	})
	hdr := http.Header{}
	hdr.Set(proxy.RevisionHeader, testRev.Name)
	hdr.Set(proxy.NamespaceHeader, testRev.Namespace)
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr(act), hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, m := range []string{"one", "two"} {
		if i > 0 {
			time.Sleep(400 * time.Millisecond) // longer than the idle timeout
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != "echo:"+m {
			t.Fatalf("got %q %v", got, err)
		}
	}
}

func TestFullDuplexHTTP1(t *testing.T) {
	// The backend answers each line as it arrives, before the request ends.
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(200)
		rc.Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "echo:"+line)
			rc.Flush()
		}
	}))
	act, _, _ := activatorServer(t, []string{addr(backend)}, func(c *testConfig) {
		info := testInfo()
		info.FullDuplex = true
		c.Revisions = fakeRevisions{testRev: info}
	})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, act.URL, pr)
	// A fresh transport: HTTP/1.1 only.
	client := &http.Client{Transport: &http.Transport{}}
	type ret struct {
		resp *http.Response
		err  error
	}
	rch := make(chan ret, 1)
	go func() {
		resp, err := client.Do(withRev(req))
		rch <- ret{resp, err}
	}()
	io.WriteString(pw, "first\n")
	r := <-rch
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.resp.Body.Close()
	br := bufio.NewReader(r.resp.Body)
	for i, line := range []string{"first\n", "second\n", "third\n"} {
		if i > 0 {
			io.WriteString(pw, line)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != "echo:"+line {
			t.Fatalf("line %d: %q %v", i, got, err)
		}
	}
	pw.Close()
}

func TestRetryOnRefusedConnection(t *testing.T) {
	dead := refusedAddr(t)
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "ok:"+string(b))
	}))
	act, th, _ := activatorServer(t, []string{dead, addr(backend)}, nil)
	req, _ := http.NewRequest(http.MethodPost, act.URL, strings.NewReader("body"))
	resp, err := http.DefaultClient.Do(withRev(req))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok:body" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if len(th.attempts) != 2 {
		t.Fatalf("attempts = %v, want the refused pod then the good one", th.attempts)
	}
}

func TestNoRetryAfterRequestReachedPod(t *testing.T) {
	var reached atomic.Int32
	dies := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.ReadAll(r.Body)
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	}))
	good := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("request sent twice")
	}))
	act, th, _ := activatorServer(t, []string{addr(dies), addr(good)}, nil)
	req, _ := http.NewRequest(http.MethodPost, act.URL, strings.NewReader("once"))
	resp, err := http.DefaultClient.Do(withRev(req))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || len(th.attempts) != 1 || reached.Load() != 1 {
		t.Fatalf("got %d after attempts %v (pod reached %d times), want one 502", resp.StatusCode, th.attempts, reached.Load())
	}
}

func TestAllPodsRefused(t *testing.T) {
	dead := refusedAddr(t)
	act, _, _ := activatorServer(t, []string{dead}, nil)
	req, _ := http.NewRequest(http.MethodGet, act.URL, nil)
	resp, err := http.DefaultClient.Do(withRev(req))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %d, want 502", resp.StatusCode)
	}
}

// refusedAddr returns a loopback address that refuses connections: a socket
// bound to it but not listening holds the port for the test.
func refusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
