// Command autoscale is the lab's load-test app, in the spirit of upstream's test/test_images/autoscale.
//
// Query parameters, combinable:
//
//	sleep=<ms>    wait that long before answering (bounded by the request's context)
//	status=<code> answer with that HTTP status instead of 200
//	hang=1        never answer: hold the request until the client gives up
//	bytes=<n>     write n bytes of body (default: a short text line)
//
// It counts in-flight requests and reports them on every answer, so load tests can see
// how the activator spreads work across pods.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// maxSleep bounds ?sleep so a bad query can't pin a request for hours.
const maxSleep = 10 * time.Minute

type app struct {
	inflight atomic.Int64
	host     string
	revision string
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := a.inflight.Add(1)
	defer a.inflight.Add(-1)
	q := r.URL.Query()

	if q.Get("hang") != "" {
		<-r.Context().Done()
		return
	}
	if s := q.Get("sleep"); s != "" {
		ms, err := strconv.Atoi(s)
		if err != nil || ms < 0 {
			http.Error(w, "sleep must be a non-negative number of milliseconds", http.StatusBadRequest)
			return
		}
		d := min(time.Duration(ms)*time.Millisecond, maxSleep)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	status := http.StatusOK
	if s := q.Get("status"); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil || code < 100 || code > 999 {
			http.Error(w, "status must be an HTTP status code", http.StatusBadRequest)
			return
		}
		status = code
	}
	w.Header().Set("X-Autoscale-Host", a.host)
	w.Header().Set("X-Autoscale-Inflight", strconv.FormatInt(n, 10))
	if a.revision != "" {
		w.Header().Set("X-Autoscale-Revision", a.revision)
	}
	w.WriteHeader(status)
	if s := q.Get("bytes"); s != "" {
		size, err := strconv.Atoi(s)
		if err == nil && size > 0 {
			const chunk = 32 << 10
			buf := []byte(strings.Repeat("x", chunk))
			for size > 0 {
				k := min(size, chunk)
				if _, err := w.Write(buf[:k]); err != nil {
					return
				}
				size -= k
			}
			return
		}
	}
	fmt.Fprintf(w, "autoscale %s inflight=%d\n", a.host, n)
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host, _ := os.Hostname()
	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           &app{host: host, revision: os.Getenv("K_REVISION")},
		ReadHeaderTimeout: time.Minute,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
