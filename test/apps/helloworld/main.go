// Command helloworld answers every request with "Hello <TARGET>!" (TARGET defaults to World), listening
// on $PORT (default 8080): the lab's counterpart of Knative's helloworld-go sample.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	addr := ":" + envOr("PORT", "8080")
	srv := &http.Server{Addr: addr, Handler: newHandler(envOr("TARGET", "World")), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("helloworld: %v", err)
	}
	log.Printf("helloworld: listening on %s", addr)
	if err := serve(ctx, srv, ln); err != nil {
		log.Fatalf("helloworld: %v", err)
	}
}

func newHandler(target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "Hello %s!\n", target)
	})
}

// serve runs srv until ctx ends, then drains in-flight requests: Knative sends SIGTERM once the pod
// stops receiving new traffic.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
