package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"
)

// errDraining is what the kubelet probes read once SIGTERM arrived.
var errDraining = errors.New("received SIGTERM from kubelet")

// drainState fails readiness once draining starts.
type drainState struct{ draining atomic.Bool }

// Health returns nil until Drain, then an error. It does not look at the
// autoscaler connection: an autoscaler outage must not take the data plane
// down (knative/serving#6529).
func (d *drainState) Health() error {
	if d.draining.Load() {
		return errDraining
	}
	return nil
}

type namedServer struct {
	name string
	srv  *http.Server
	lis  net.Listener // nil: listen on srv.Addr
}

// terminationGrace bounds drain plus shutdown after SIGTERM: the activator's
// terminationGracePeriodSeconds upstream (600 s), after which the kubelet
// kills the pod anyway.
const terminationGrace = 10 * time.Minute

// serve runs the servers until sigCtx ends (SIGTERM) or one fails. It then
// fails readiness, keeps serving for drain, and shuts every server down
// gracefully, waiting for in-flight requests. drain and the shutdown share
// one bound, grace, which starts at the signal: a bound started at start-up
// would have run out on any activator older than grace, and it would exit
// with requests in flight.
func serve(sigCtx context.Context, servers []namedServer, ds *drainState, drain, grace time.Duration,
	clk clock.Clock, logger *zap.SugaredLogger) error {
	errCh := make(chan error, len(servers))
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			// A server with a TLSConfig (the HTTPS port) serves TLS; its
			// certificate comes from TLSConfig.GetCertificate.
			switch tlsOn := s.srv.TLSConfig != nil; {
			case s.lis != nil && tlsOn:
				err = s.srv.ServeTLS(s.lis, "", "")
			case s.lis != nil:
				err = s.srv.Serve(s.lis)
			case tlsOn:
				err = s.srv.ListenAndServeTLS("", "")
			default:
				err = s.srv.ListenAndServe()
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errCh <- fmt.Errorf("%s server failed: %w", s.name, err)
			}
		}()
	}

	var runErr error
	select {
	case <-sigCtx.Done():
		logger.Info("Received SIGTERM; failing readiness and draining")
	case runErr = <-errCh:
		logger.Errorw("Server failed; shutting down", zap.Error(runErr))
	}
	shutdownCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	graceTimer := clk.NewTimer(grace)
	defer graceTimer.Stop()
	go func() {
		select {
		case <-graceTimer.C():
			logger.Warnf("Termination grace of %v is over; closing the connections left", grace)
			cancel()
		case <-shutdownCtx.Done():
		}
	}()
	if drain > 0 {
		logger.Infof("Serving for %v so that endpoint removal propagates", drain)
		t := clk.NewTimer(drain)
		// Readiness fails only once both timers exist, so a fake clock stepped after it reads
		// draining fires them as a real one would.
		ds.draining.Store(true)
		select {
		case <-t.C():
		case <-shutdownCtx.Done():
			t.Stop()
		}
	}
	ds.draining.Store(true)
	logger.Info("Shutting down servers")
	var sdWG sync.WaitGroup
	for _, s := range servers {
		sdWG.Add(1)
		go func() {
			defer sdWG.Done()
			if err := s.srv.Shutdown(shutdownCtx); err != nil {
				logger.Errorw("Server shutdown", "server", s.name, zap.Error(err))
				// The grace is over: cut what is left rather than leave handlers running.
				s.srv.Close()
			}
		}()
	}
	sdWG.Wait()
	wg.Wait()
	logger.Info("Servers shut down")
	return runErr
}
