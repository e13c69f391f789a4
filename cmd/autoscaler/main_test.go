package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/pkg/wire"
)

// TestStatPath sends a stat over the websocket and sees it reach the
// collector (as a stat of an unknown revision: nothing creates collections
// in this build) through the metrics endpoint.
func TestStatPath(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	cfg := config{statsAddr: "127.0.0.1:0", metricsAddr: "127.0.0.1:0", ns: "knative-serving",
		kubeconfig: "testdata/missing-kubeconfig", shutdownTimeout: 5 * time.Second}
	go func() { done <- run(ctx, cfg, ready, zaptest.NewLogger(t).Sugar()) }()
	var addrs [2]string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	}

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addrs[0]+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	frame := wire.MarshalMessages([]wire.StatMessage{{
		Key:  types.NamespacedName{Namespace: "ns", Name: "rev"},
		Stat: wire.Stat{PodName: "activator", AverageConcurrentRequests: 3, RequestCount: 5},
	}})
	if err := conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		t.Fatal(err)
	}

	want := `thaw_collector_stats_dropped_total{reason="unknown_revision"} 1`
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := scrape(t, "http://"+addrs[1]+"/metrics")
		if strings.Contains(body, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %q:\n%s", want, body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	// The stat server said goodbye with 1012.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, 1012) {
		t.Errorf("read after shutdown = %v, want close 1012", err)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
