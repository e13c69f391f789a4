package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/thaw-dev/thaw/pkg/autoscaler/collector"
)

const (
	// windowsPath serves this replica's windows to a starting peer, on the metrics port.
	windowsPath = "/thaw/windows"
	// seedBudget bounds how long a starting replica waits for a peer's windows before campaigning.
	seedBudget = 2 * time.Second
	// maxSnapshotBytes bounds a peer's answer.
	maxSnapshotBytes = 64 << 20
)

// serveWindows answers a peer's request for this replica's windows.
func (a *app) serveWindows(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(a.p.coll.Snapshot()); err != nil {
		a.logger.Debugw("Windows not sent", zap.Error(err))
	}
}

// seedFromPeers asks every peer at once for its windows and seeds the collector with the first answer
// (a dead peer's address must not hold the others up). Upstream's replicas have no such endpoint and
// answer 404; with no peer, or none answering within the budget, the replica starts empty as
// upstream's does.
func (a *app) seedFromPeers(ctx context.Context) {
	peers := a.fwd.Peers()
	if len(peers) == 0 {
		return
	}
	ips := make([]string, 0, len(peers))
	for ip := range peers {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	ctx, cancel := context.WithTimeout(ctx, seedBudget)
	defer cancel()
	type answer struct {
		ip   string
		snap []collector.RevisionSnapshot
		err  error
	}
	answers := make(chan answer, len(ips))
	client := &http.Client{}
	for _, ip := range ips {
		go func() {
			snap, err := fetchWindows(ctx, client, "http://"+net.JoinHostPort(ip, strconv.Itoa(a.cfg.MetricsPort))+windowsPath)
			answers <- answer{ip, snap, err}
		}()
	}
	for range ips {
		ans := <-answers
		if ans.err != nil {
			a.logger.Debugw("No windows from a peer", "peer", ans.ip, zap.Error(ans.err))
			continue
		}
		n := a.p.coll.Seed(ans.snap)
		a.logger.Infow("Started from a peer's windows", "peer", ans.ip, "revisions", len(ans.snap), "seeded now", n)
		return // the deferred cancel ends the other requests; their goroutines write to the buffered channel
	}
	a.logger.Infow("No peer's windows to start from; starting empty", "peers", len(ips))
}

func fetchWindows(ctx context.Context, client *http.Client, url string) ([]collector.RevisionSnapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var snap []collector.RevisionSnapshot
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSnapshotBytes)).Decode(&snap); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return snap, nil
}
