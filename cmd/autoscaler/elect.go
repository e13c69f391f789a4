package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	kle "knative.dev/pkg/leaderelection"
)

// leaseName is the single bucket's Lease, named as upstream's
// autoscaler-bucket-XX-of-YY so that tools (and a mixed rollout) see the
// same object.
const leaseName = "autoscaler-bucket-00-of-01"

// electionTimes are the Lease durations.
type electionTimes struct {
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// defaultElectionTimes are upstream's (knative.dev/pkg leaderelection).
var defaultElectionTimes = electionTimes{60 * time.Second, 40 * time.Second, 10 * time.Second}

// readElectionTimes reads config-leader-election once at startup, as
// upstream does. A missing or invalid ConfigMap gives the defaults, with a
// log line; buckets other than 1 are not supported yet and are ignored.
func readElectionTimes(ctx context.Context, kube kubernetes.Interface, ns string, logger *zap.SugaredLogger) electionTimes {
	cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, leaderElectionConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return defaultElectionTimes
	}
	if err != nil {
		logger.Warnw("Cannot read config-leader-election; using the defaults", zap.Error(err))
		return defaultElectionTimes
	}
	c, err := kle.NewConfigFromMap(cm.Data)
	if err != nil {
		logger.Errorw("Invalid config-leader-election; using the defaults", zap.Error(err))
		return defaultElectionTimes
	}
	if c.Buckets != 1 {
		logger.Warnw("Only one autoscaler bucket is supported; ignoring buckets", "buckets", c.Buckets)
	}
	t := electionTimes{c.LeaseDuration, c.RenewDeadline, c.RetryPeriod}
	if err := t.validate(); err != nil {
		logger.Errorw("Invalid config-leader-election durations; using the defaults", zap.Error(err))
		return defaultElectionTimes
	}
	return t
}

// validate applies client-go's constraints, so a bad ConfigMap is a log line
// rather than a panic in the elector.
func (t electionTimes) validate() error {
	if t.RetryPeriod <= 0 || t.RenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(t.RetryPeriod)) ||
		t.LeaseDuration <= t.RenewDeadline {
		return fmt.Errorf("need lease-duration > renew-deadline > %.1f×retry-period > 0, have %v, %v, %v",
			leaderelection.JitterFactor, t.LeaseDuration, t.RenewDeadline, t.RetryPeriod)
	}
	return nil
}

// elector runs lead whenever this replica holds the Lease. Terms never
// overlap; a lost Lease ends the term (its context is cancelled) and the
// replica campaigns again, so an API server outage longer than the renew
// deadline costs a term, not the process.
type elector struct {
	kube      kubernetes.Interface
	ns, id    string
	times     electionTimes
	lead      func(ctx context.Context)
	logger    *zap.SugaredLogger
	termMu    sync.Mutex // held for the whole of a term
	termsStop context.Context
}

// run campaigns until ctx ends. Terms stop when stop ends (before the Lease
// is released at ctx's end, so that no reconcile runs without it).
func (e *elector) run(ctx, stop context.Context) error {
	e.termsStop = stop
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.ns, Name: leaseName},
		Client:     e.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.id},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            leaseName,
			LeaseDuration:   e.times.LeaseDuration,
			RenewDeadline:   e.times.RenewDeadline,
			RetryPeriod:     e.times.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: e.term,
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					if id != e.id {
						e.logger.Infow("Another replica leads", "lease", leaseName, "holder", id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		le.Run(ctx)
		if ctx.Err() == nil {
			e.logger.Warnw("Lost the Lease; campaigning again", "lease", leaseName)
		}
	}
	return nil
}

// term runs one leadership term; client-go calls it on its own goroutine.
func (e *elector) term(ctx context.Context) {
	e.termMu.Lock()
	defer e.termMu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(e.termsStop, cancel)
	defer stop()
	if ctx.Err() != nil {
		return
	}
	e.logger.Infow("Leading", "lease", leaseName, "holder", e.id)
	e.lead(ctx)
	e.logger.Infow("Term ended", "lease", leaseName, "cause", context.Cause(ctx))
}

// waitTerms returns once no term runs; call it after stop has ended, so no
// new term starts its work.
func (e *elector) waitTerms() {
	e.termMu.Lock()
	e.termMu.Unlock() //nolint:staticcheck // an empty critical section is the wait
}

var errLoopbackIP = errors.New("POD_IP is a loopback address; the Lease holder identity must be the pod's routable IP")
