package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/thaw-dev/thaw/test/apps/grpcping/ping"
)

// start serves on a loopback port for the test's lifetime and returns a client connection.
func start(t *testing.T) (string, *grpc.ClientConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, &pinger{}) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), conn
}

func TestUnaryAndHealth(t *testing.T) {
	_, conn := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ping.Client{Conn: conn}.Ping(ctx, &ping.Request{Msg: "hello"})
	if err != nil || resp.Msg != "hello" {
		t.Fatalf("Ping = %+v, %v", resp, err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}
}

func TestBidiStream(t *testing.T) {
	_, conn := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := ping.Client{Conn: conn}.PingStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"a", "b", "c"} {
		if err := s.Send(&ping.Request{Msg: msg}); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil || r.Msg != msg {
			t.Fatalf("Recv = %+v, %v; want %q", r, err, msg)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
}

func TestServerStream(t *testing.T) {
	_, conn := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := ping.Client{Conn: conn}
	for _, tc := range []struct {
		count int32
		want  []string
		code  codes.Code
	}{
		{0, nil, codes.OK},
		{3, []string{"x 0", "x 1", "x 2"}, codes.OK},
		{-1, nil, codes.InvalidArgument},
		{ping.MaxServerStreamCount + 1, nil, codes.InvalidArgument},
	} {
		got, err := c.PingServerStream(ctx, &ping.Request{Msg: "x", Count: tc.count})
		if status.Code(err) != tc.code {
			t.Fatalf("count %d: err %v, want code %v", tc.count, err, tc.code)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("count %d: got %d responses, want %d", tc.count, len(got), len(tc.want))
		}
		for i := range got {
			if got[i].Msg != tc.want[i] {
				t.Errorf("count %d: response %d = %q, want %q", tc.count, i, got[i].Msg, tc.want[i])
			}
		}
	}
}

func TestPlainHTTP(t *testing.T) {
	addr, _ := start(t)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || len(b) == 0 {
		t.Fatalf("GET / = %d %q", resp.StatusCode, b)
	}
}
