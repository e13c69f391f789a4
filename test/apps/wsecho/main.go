// Command wsecho echoes every websocket message (text or binary) back to its sender, on any path, on
// $PORT (default 8080). A request without an Upgrade header gets a short text answer, so that plain
// HTTP probes succeed.
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

	"github.com/gorilla/websocket"
)

// maxMessage bounds one message, so a client cannot make the app buffer without limit.
const maxMessage = 1 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatalf("wsecho: %v", err)
	}
	log.Printf("wsecho: listening on %s", ln.Addr())
	if err := serve(ctx, ln); err != nil {
		log.Fatalf("wsecho: %v", err)
	}
}

func newHandler() http.Handler {
	// Any origin: the app sits behind Knative's ingress, not in front of browsers' cookies.
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "wsecho: connect with a websocket")
			return
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade already answered with an error status
		}
		defer conn.Close()
		conn.SetReadLimit(maxMessage)
		echo(conn)
	})
}

// echo sends each message back until the peer closes or the connection fails.
func echo(conn *websocket.Conn) {
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
				log.Printf("wsecho: read: %v", err)
			}
			return
		}
		if err := conn.WriteMessage(typ, msg); err != nil {
			log.Printf("wsecho: write: %v", err)
			return
		}
	}
}

// serve runs the server on ln until ctx ends, then drains. Hijacked websocket connections are not
// tracked by Shutdown; they end when their peers close or the process exits.
func serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: newHandler(), ReadHeaderTimeout: 10 * time.Second}
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
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return err
}
