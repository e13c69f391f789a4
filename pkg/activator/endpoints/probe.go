package endpoints

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// The activator→queue-proxy probe contract (queue-proxy answers 200 "queue" when its user container is ready).
const (
	probeHeader     = "K-Network-Probe"
	probeValue      = "queue"
	probeUserAgent  = "Knative-Activator-Probe"
	passthroughLB   = "K-Passthrough-Lb"
	healthCheckPath = "/healthz"
)

// errProbeTimeout is the cancel cause of a probe that ran out of time.
var errProbeTimeout = errors.New("probe timed out")

type probeOutcome int

const (
	probeFailed   probeOutcome = iota // no answer (dial error, timeout, ...)
	probeMeshLike                     // answered 502/503: a mesh sidecar may be in the way
	probeNotMesh                      // answered something else that is not a pass
	probePassed
)

// probe sends one queue probe to dest ("ip:port"). host, when set, overrides the Host header.
func probe(ctx context.Context, rt http.RoundTripper, dest, host string) (probeOutcome, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+dest+healthCheckPath, nil)
	if err != nil {
		return probeFailed, err
	}
	req.Header.Set(probeHeader, probeValue)
	req.Header.Set("User-Agent", probeUserAgent)
	if host != "" {
		req.Host = host
		req.Header.Set(passthroughLB, "true")
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return probeFailed, err
	}
	defer resp.Body.Close()
	// Read a little more than the expected body so a longer one fails; draining it lets the keep-alive
	// connection carry the first proxied request.
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(len(probeValue))+64))
	if err != nil {
		return probeFailed, err
	}
	if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable {
		return probeMeshLike, fmt.Errorf("probe answered %d", resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return probeNotMesh, fmt.Errorf("probe answered %d", resp.StatusCode)
	}
	if string(body) != probeValue {
		return probeNotMesh, fmt.Errorf("probe answered body %q, want %q", body, probeValue)
	}
	return probePassed, nil
}
