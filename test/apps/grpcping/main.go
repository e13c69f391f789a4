// Command grpcping serves the ping gRPC service (unary, bidirectional and server streaming) plus the
// standard gRPC health service over cleartext HTTP/2 (h2c) on $PORT (default 8080). Plain HTTP/1 requests
// get a short text answer, so simple probes work too. DELAY_MS delays each unary answer.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/thaw-dev/thaw/test/apps/grpcping/ping"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	delay, err := strconv.Atoi(os.Getenv("DELAY_MS"))
	if err != nil || delay < 0 {
		delay = 0
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatalf("grpcping: %v", err)
	}
	log.Printf("grpcping: listening on %s (h2c)", ln.Addr())
	if err := serve(ctx, ln, &pinger{delay: time.Duration(delay) * time.Millisecond}); err != nil {
		log.Fatalf("grpcping: %v", err)
	}
}

// newHandler routes gRPC (HTTP/2 with a gRPC content type) to g and answers anything else in text.
func newHandler(g *grpc.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "grpcping: use gRPC over h2c")
	})
}

func newGRPCServer(impl ping.Server) *grpc.Server {
	g := grpc.NewServer(grpc.ForceServerCodec(ping.Codec{}))
	ping.Register(g, impl)
	healthpb.RegisterHealthServer(g, health.NewServer())
	return g
}

// serve runs the server on ln until ctx ends, then drains.
func serve(ctx context.Context, ln net.Listener, impl ping.Server) error {
	g := newGRPCServer(impl)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: newHandler(g), Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	g.Stop()
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return err
}

// pinger echoes messages back.
type pinger struct {
	delay time.Duration
}

func (p *pinger) Ping(ctx context.Context, req *ping.Request) (*ping.Response, error) {
	if p.delay > 0 {
		t := time.NewTimer(p.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &ping.Response{Msg: req.Msg}, nil
}

func (p *pinger) PingStream(stream grpc.BidiStreamingServer[ping.Request, ping.Response]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := stream.Send(&ping.Response{Msg: req.Msg}); err != nil {
			return err
		}
	}
}

func (p *pinger) PingServerStream(req *ping.Request, stream grpc.ServerStreamingServer[ping.Response]) error {
	n := int(req.Count)
	if n < 0 || n > ping.MaxServerStreamCount {
		return status.Errorf(codes.InvalidArgument, "count %d outside [0, %d]", req.Count, ping.MaxServerStreamCount)
	}
	for i := 0; i < n; i++ {
		if err := stream.Send(&ping.Response{Msg: fmt.Sprintf("%s %d", req.Msg, i)}); err != nil {
			return err
		}
	}
	return nil
}
