package kpa

// The learned keep-alive / pre-warm policy (pkg/autoscaler/keepalive) in the KPA.
//
// Opt-in: config-autoscaler's thaw-keep-alive (off, learned, hybrid) for
// every revision, or the Revision annotation autoscaling.thaw.dev/keep-alive
// (copied to its PodAutoscaler) for one, which wins. With neither, nothing
// here acts and scale to zero is upstream's.
//
// Learning: every replica sees every stat (the activator's, forwarded to all
// replicas, and the holder's scrapes, mirrored), so every replica keeps the
// policy of every revision that has it on, and a replica taking a bucket over
// has its revisions' histograms warm. A stat with requests in flight or
// counted makes the revision busy; no such stat for keepAliveQuiet makes it
// idle, dated from that last stat. The time from idle to the next busy is
// the idle time the histogram records, as `thaw replay --simulate` records
// it from requests (pauses under 2 s are not seen here, hence MinIdle).
//
// Acting (the bucket holder, in the scale-to-zero path): once the PA is
// inactive, the last pod stays while the policy wants a pod (instead of the
// pod retention period; the grace period still applies once the policy lets
// the pod go), and a revision at zero is scaled to one a pod start ahead of
// the policy's pre-warm window. None of it applies while the decider wants
// pods: a real scale-up is never held back.
//
// Persistence: the holder writes the policy's state (keepalive.State, bounded
// by its bins) and its windows as annotations of the PodAutoscaler it owns
// (the autoscaler's service account may patch PodAutoscalers; upstream's
// revision reconciler keeps annotations outside autoscaling.knative.dev), at
// most once per keepAlivePersistEvery per revision unless the windows
// changed, and within a cluster-wide write budget. A replica that starts
// reads them back.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"

	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/keepalive"
	"github.com/thaw-dev/thaw/pkg/wire"
)

const (
	// keepAliveQuiet is how long a busy revision goes without a stat
	// showing traffic before it counts as idle (from its last such stat).
	keepAliveQuiet = keepalive.StatQuiet
	// keepAliveTick is how often busy revisions are checked for quiet.
	keepAliveTick = time.Second
	// keepAlivePersistEvery bounds the state writes of one revision while
	// its windows stay the same.
	keepAlivePersistEvery = time.Minute
	// keepAliveWriteQPS and keepAliveWriteBurst bound the state writes of
	// all revisions, so the policy cannot eat the API budget.
	keepAliveWriteQPS   = 2
	keepAliveWriteBurst = 20
	// defaultPreWarmLead is the pod start a pre-warm allows for until the
	// pacer has measured one; maxPreWarmLead caps a measured one.
	defaultPreWarmLead = 2 * time.Second
	maxPreWarmLead     = 30 * time.Second
	// preWarmRecheck re-runs a reconcile after a pre-warm, until the pod
	// is asked for (a busy pacer may defer it).
	preWarmRecheck = time.Second
)

// Event reason of a bad keep-alive annotation.
const reasonInvalidKeepAlive = "InvalidKeepAlive"

var (
	keepAliveLabels       = []string{"k8s_namespace_name", "kn_revision_name", "policy", "mode"}
	preWarmLabels         = []string{"k8s_namespace_name", "kn_revision_name", "policy"}
	descKeepAlivePreWarm  = prometheus.NewDesc("thaw_autoscaler_keepalive_prewarm_seconds", "Learned pre-warm window: how long after going idle the revision may be without pods.", keepAliveLabels, nil)
	descKeepAliveKeep     = prometheus.NewDesc("thaw_autoscaler_keepalive_keepalive_seconds", "Learned keep-alive window: how long a pod is wanted after the pre-warm window.", keepAliveLabels, nil)
	descKeepAliveIdle     = prometheus.NewDesc("thaw_autoscaler_keepalive_idle_times", "Idle times in the revision's histogram (in range and out of bounds).", keepAliveLabels, nil)
	descKeepAlivePreWarms = prometheus.NewDesc("thaw_autoscaler_keepalive_prewarms_total", "Scale-ups from zero this replica made ahead of a predicted request.", preWarmLabels, nil)
	descKeepAliveRevs     = prometheus.NewDesc("thaw_autoscaler_keepalive_revisions", "Revisions with the keep-alive policy on.", nil, nil)
	descKeepAliveWrites   = prometheus.NewDesc("thaw_autoscaler_keepalive_state_writes_total", "Keep-alive state writes to PodAutoscalers, by result.", []string{"result"}, nil)
)

// kaRev is one revision's policy and what the KPA knows about it.
type kaRev struct {
	mode    asconfig.KeepAliveMode
	minHold time.Duration
	scale   int
	pol     *keepalive.Policy
	// last is when a stat last showed traffic; acc the requests counted
	// but not yet whole.
	last time.Time
	acc  float64
	// written is when the state was last written; writtenState and
	// writtenWin what was written (or read back); winWritten whether the
	// windows annotation is there for this mode.
	written      time.Time
	writtenState string
	writtenWin   keepalive.Windows
	winWritten   bool
	prewarms     uint64
}

// keepAlives holds the policies of the revisions that have one.
type keepAlives struct {
	r *Reconciler

	mu   sync.Mutex
	revs map[types.NamespacedName]*kaRev
	// bad holds the bad annotation value last logged per PA, so one bad
	// value is logged once.
	bad map[types.NamespacedName]string

	cfgLogged             atomic.Pointer[asconfig.Config]
	writes                flowcontrol.PassiveRateLimiter
	writeOK, writeErr     atomic.Uint64
	lead                  func() time.Duration
	newPolicy             func(asconfig.KeepAliveMode, time.Duration, int) (*keepalive.Policy, error)
	persistEvery, quietIn time.Duration
}

// newKeepAlives registers the PA handler that keeps the set of revisions
// with the policy on.
func newKeepAlives(r *Reconciler) (*keepAlives, error) {
	k := &keepAlives{r: r, revs: map[types.NamespacedName]*kaRev{}, bad: map[types.NamespacedName]string{},
		writes:       flowcontrol.NewTokenBucketPassiveRateLimiterWithClock(keepAliveWriteQPS, keepAliveWriteBurst, r.d.Clock),
		persistEvery: keepAlivePersistEvery, quietIn: keepAliveQuiet}
	k.lead = k.measuredLead
	k.newPolicy = func(m asconfig.KeepAliveMode, hold time.Duration, scale int) (*keepalive.Policy, error) {
		c, err := PolicyConfig(m, hold).TimeScaled(scale)
		if err != nil {
			return nil, err
		}
		return keepalive.New(c, r.d.Clock)
	}
	if _, err := r.d.PodAutoscalers.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.syncObj(obj) },
		UpdateFunc: func(_, obj any) { k.syncObj(obj) },
		DeleteFunc: k.deleted,
	}); err != nil {
		return nil, fmt.Errorf("adding keep-alive PA handler: %w", err)
	}
	return k, nil
}

// PolicyConfig is the keepalive.Config of a mode, with hold the time a pod
// stays anyway after the revision goes idle (the stable window and the
// grace period): `thaw replay --simulate`'s learned or hybrid, seeing
// pauses as the stat path does (MinIdle keepalive.StatQuiet).
func PolicyConfig(m asconfig.KeepAliveMode, hold time.Duration) keepalive.Config {
	c := keepalive.DefaultConfig()
	if m == asconfig.KeepAliveHybrid {
		c = keepalive.PaperConfig()
	}
	c.MinHold = hold
	c.MinIdle = keepalive.StatQuiet
	return c
}

func (k *keepAlives) syncObj(obj any) {
	if pa, ok := obj.(*autoscalingv1alpha1.PodAutoscaler); ok {
		k.sync(pa)
	}
}

func (k *keepAlives) deleted(obj any) {
	if m, ok := unwrap(obj); ok {
		key := types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetName()}
		k.mu.Lock()
		delete(k.revs, key)
		delete(k.bad, key)
		k.mu.Unlock()
	}
}

// logConfig logs a bad thaw-keep-alive once per config-autoscaler version.
func (k *keepAlives) logConfig(cfg *asconfig.Config) {
	if cfg.KeepAliveErr != nil && k.cfgLogged.Swap(cfg) != cfg {
		k.r.d.Logger.Errorw("Invalid keep-alive setting; the policy is off for revisions without the annotation",
			"configmap", asconfig.ConfigName, zap.Error(cfg.KeepAliveErr))
	}
}

// sync starts, changes or drops pa's policy to match its annotation and
// the config. A new policy starts from the state annotation when it has a
// good one.
func (k *keepAlives) sync(pa *autoscalingv1alpha1.PodAutoscaler) {
	key := types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name}
	cfg := k.r.d.Config()
	k.logConfig(cfg)
	mode, err := cfg.KeepAliveFor(pa.Annotations)
	scale, serr := asconfig.KeepAliveTimeScale(pa.Annotations)
	if err == nil && serr != nil && mode != asconfig.KeepAliveOff {
		mode, err = asconfig.KeepAliveOff, serr
	}
	if !isKPA(pa) || pa.DeletionTimestamp != nil {
		mode, err = asconfig.KeepAliveOff, nil
	}
	var hold time.Duration
	if mode != asconfig.KeepAliveOff {
		hold = Resolve(cfg, k.r.d.DeploymentConfig(), pa).StableWindow + cfg.ScaleToZeroGracePeriod
	}

	k.mu.Lock()
	logBad := false
	if err != nil {
		v := err.Error()
		logBad = k.bad[key] != v
		k.bad[key] = v
	} else {
		delete(k.bad, key)
	}
	var restoreErr error
	rev := k.revs[key]
	switch {
	case mode == asconfig.KeepAliveOff:
		delete(k.revs, key)
	case rev != nil && rev.mode == mode && rev.minHold == hold && rev.scale == scale:
	default:
		pol, perr := k.newPolicy(mode, hold, scale)
		if perr != nil { // the configurations are constants: unreachable
			restoreErr = perr
			break
		}
		next := &kaRev{mode: mode, minHold: hold, scale: scale, pol: pol}
		if rev != nil {
			// Same history under a new configuration (a new time scale
			// has other bins: it starts afresh).
			_ = pol.Restore(rev.pol.Snapshot())
			next.last, next.acc, next.written, next.writtenState, next.prewarms = rev.last, rev.acc, rev.written, rev.writtenState, rev.prewarms
		} else if s, ok := pa.Annotations[asconfig.KeepAliveStateAnnotationKey]; ok {
			next.writtenState = s
			restoreErr = restoreState(pol, s)
			_, next.winWritten = pa.Annotations[asconfig.KeepAliveWindowsAnnotationKey]
		}
		next.writtenWin = pol.Windows()
		k.revs[key] = next
	}
	k.mu.Unlock()

	if logBad {
		k.r.d.Logger.Warnw("Invalid keep-alive annotation; the policy is off for this revision", "key", key.String(), zap.Error(err))
		if k.r.owns(key) {
			k.r.d.Recorder.Eventf(pa, corev1.EventTypeWarning, reasonInvalidKeepAlive, "%v", err)
		}
	}
	if restoreErr != nil {
		k.r.d.Logger.Warnw("Keep-alive state not restored; learning afresh", "key", key.String(), zap.Error(restoreErr))
	}
}

// maxStateBytes bounds the state annotation read back (a full histogram of
// 1440 bins is about 30 KB).
const maxStateBytes = 64 << 10

func restoreState(pol *keepalive.Policy, s string) error {
	if len(s) > maxStateBytes {
		return fmt.Errorf("%s: %d bytes, at most %d", asconfig.KeepAliveStateAnnotationKey, len(s), maxStateBytes)
	}
	var st keepalive.State
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return fmt.Errorf("%s: %w", asconfig.KeepAliveStateAnnotationKey, err)
	}
	if err := pol.Restore(st); err != nil {
		return fmt.Errorf("%s: %w", asconfig.KeepAliveStateAnnotationKey, err)
	}
	return nil
}

// ObserveStat feeds a stat of key (pushed by an activator, forwarded by a
// peer, or scraped) to its keep-alive policy, if it has one. It never
// blocks on I/O.
func (r *Reconciler) ObserveStat(key types.NamespacedName, s wire.Stat) { r.keepAlive.observe(key, s) }

func (k *keepAlives) observe(key types.NamespacedName, s wire.Stat) {
	conc := s.AverageConcurrentRequests
	// Requests the activator proxied to the pod are counted in its own stat.
	reqs := s.RequestCount - s.ProxiedRequestCount
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	if !finite(conc) || !finite(reqs) || (conc <= 0 && reqs <= 0) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	rev := k.revs[key]
	if rev == nil {
		return
	}
	rev.last = k.r.d.Clock.Now()
	if reqs > 0 {
		rev.acc += min(reqs, 1e9)
	}
	if n := math.Floor(rev.acc); n >= 1 {
		rev.acc -= n
		rev.pol.Arrivals(uint64(n))
	} else {
		rev.pol.Busy()
	}
}

// tick turns busy revisions without traffic for quietIn idle, and returns
// them. (A busy state restored from a snapshot has no last traffic: idle
// from now.)
func (k *keepAlives) tick(now time.Time) []types.NamespacedName {
	k.mu.Lock()
	defer k.mu.Unlock()
	var idled []types.NamespacedName
	for key, rev := range k.revs {
		if rev.pol.IsBusy() && now.Sub(rev.last) >= k.quietIn {
			// Idle since the last traffic, as the simulation dates it
			// from the last request.
			rev.pol.IdleAt(rev.last)
			idled = append(idled, key)
		}
	}
	return idled
}

// start ticks until ctx ends; wg tracks it. Going idle enqueues nothing:
// the decider's change to 0 a stable window later reconciles the PA, and a
// PA holding its pod for a busy revision looks again by itself.
func (k *keepAlives) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := k.r.d.Clock.NewTicker(keepAliveTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				k.tick(k.r.d.Clock.Now())
			}
		}
	}()
}

// measuredLead is how long before the pre-warm window a pod is asked for:
// the pacer's recent least start latency, or a default before any.
func (k *keepAlives) measuredLead() time.Duration {
	b := k.r.pacing.p.Stats(k.r.d.Clock.Now()).Baseline
	if b <= 0 {
		return defaultPreWarmLead
	}
	return min(b, maxPreWarmLead)
}

// plans returns key's plan now and a pod start ahead, and whether key has
// the policy on.
func (k *keepAlives) plans(key types.NamespacedName, now time.Time, lead time.Duration) (cur, ahead keepalive.Plan, on bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	rev := k.revs[key]
	if rev == nil {
		return cur, ahead, false
	}
	return rev.pol.PlanAt(now), rev.pol.PlanAt(now.Add(lead)), true
}

func (k *keepAlives) countPreWarm(key types.NamespacedName) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rev := k.revs[key]; rev != nil {
		rev.prewarms++
	}
}

// inactive is the policy's part of the scale-to-zero path of an inactive
// PA that the decider wants at 0. on says whether the policy applies (then
// the retention period does not); when done, desired and apply are the
// answer, otherwise upstream's grace period rules go on.
func (r *Reconciler) keepAliveInactive(pa *autoscalingv1alpha1.PodAutoscaler, key types.NamespacedName,
	now time.Time, logger *zap.SugaredLogger) (on bool, desired int32, apply, done bool) {
	k := r.keepAlive
	lead := k.lead()
	cur, ahead, on := k.plans(key, now, lead)
	if !on {
		return false, 0, false, false
	}
	replicas, err := r.d.Scales.Replicas(pa.Namespace, pa.Spec.ScaleTargetRef)
	if err != nil {
		// Upstream's path reads it again and reports the error.
		return true, 0, false, false
	}
	if replicas != nil && *replicas == 0 {
		if !ahead.Pod {
			if !ahead.Next.IsZero() {
				r.EnqueueAfter(key, ahead.Next.Sub(now)-lead)
			}
			return true, 0, false, false
		}
		// A pre-warm is no wake-up: it waits while the pacer holds
		// real ones, and tries again shortly.
		if !r.pacing.admit(key, 1) {
			r.pacing.withdraw(key)
			r.EnqueueAfter(key, preWarmRecheck)
			return true, 0, false, true
		}
		k.countPreWarm(key)
		logger.Infow("Pre-warming ahead of the predicted request", "preWarm", ahead.PreWarm, "keepAlive", ahead.KeepAlive,
			"mode", ahead.Mode.String(), "lead", lead)
		return true, 1, true, true
	}
	if cur.Pod || ahead.Pod {
		// Keep the pod (as the retention period would) until the plan
		// changes; a busy revision is looked at again once it may be idle.
		// A pod wanted within a pod start is kept too: a pre-warmed pod
		// can turn inactive before its window opens (a stable window
		// shorter than the start), and dropping it would only start it
		// again.
		if !cur.Next.IsZero() {
			r.EnqueueAfter(key, cur.Next.Sub(now))
		} else {
			r.EnqueueAfter(key, keepAliveQuiet)
		}
		return true, 0, false, true
	}
	return true, 0, false, false
}

// keepAliveAtZero reports whether pa has the policy on and is inactive at
// zero.
func (r *Reconciler) keepAliveAtZero(pa *autoscalingv1alpha1.PodAutoscaler) bool {
	key := types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name}
	r.keepAlive.mu.Lock()
	_, on := r.keepAlive.revs[key]
	r.keepAlive.mu.Unlock()
	if !on || !pa.Status.IsInactive() {
		return false
	}
	n, err := r.d.Scales.Replicas(pa.Namespace, pa.Spec.ScaleTargetRef)
	return err == nil && n != nil && *n == 0
}

// windowsAnnotation is the JSON of the windows annotation.
func windowsAnnotation(s keepalive.Summary, m asconfig.KeepAliveMode, scale int) string {
	if scale == 1 {
		scale = 0 // omitted
	}
	b, _ := json.Marshal(struct {
		Policy    asconfig.KeepAliveMode `json:"policy"`
		TimeScale int                    `json:"timeScale,omitempty"`
		keepalive.Summary
	}{m, scale, s})
	return string(b)
}

// persist writes key's state and windows on its PA when they changed, at
// most every persistEvery unless the windows moved, within the write
// budget; with the policy off, it removes a windows annotation left from
// when it was on. Only the bucket holder calls it.
func (k *keepAlives) persist(ctx context.Context, pa *autoscalingv1alpha1.PodAutoscaler) error {
	key := types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name}
	now := k.r.d.Clock.Now()
	k.mu.Lock()
	rev := k.revs[key]
	if rev == nil {
		k.mu.Unlock()
		if _, ok := pa.Annotations[asconfig.KeepAliveWindowsAnnotationKey]; ok {
			return k.patch(ctx, pa, map[string]any{asconfig.KeepAliveWindowsAnnotationKey: nil})
		}
		return nil
	}
	b, err := json.Marshal(rev.pol.Snapshot())
	if err != nil {
		k.mu.Unlock()
		return fmt.Errorf("keep-alive state: %w", err)
	}
	state, win := string(b), rev.pol.Windows()
	winAnn := windowsAnnotation(rev.pol.Summary(), rev.mode, rev.scale)
	moved := win != rev.writtenWin || !rev.winWritten
	changed := state != rev.writtenState
	if !changed && !moved {
		k.mu.Unlock()
		return nil
	}
	if wait := k.persistEvery - now.Sub(rev.written); !moved && wait > 0 {
		k.mu.Unlock()
		k.r.EnqueueAfter(key, wait)
		return nil
	}
	if !k.writes.TryAccept() {
		// Over the budget: try again later, not every second (thousands
		// of revisions would churn the queue).
		k.mu.Unlock()
		k.r.EnqueueAfter(key, k.persistEvery)
		return nil
	}
	k.mu.Unlock()
	if err := k.patch(ctx, pa, map[string]any{asconfig.KeepAliveStateAnnotationKey: state,
		asconfig.KeepAliveWindowsAnnotationKey: winAnn}); err != nil {
		return err
	}
	k.mu.Lock()
	if cur := k.revs[key]; cur == rev {
		rev.written, rev.writtenState, rev.writtenWin, rev.winWritten = now, state, win, true
	}
	k.mu.Unlock()
	return nil
}

// patch merges annotations into pa's metadata (nil removes one). A merge
// patch carries no resource version, so it never conflicts with the
// revision reconciler's updates of the spec.
func (k *keepAlives) patch(ctx context.Context, pa *autoscalingv1alpha1.PodAutoscaler, ann map[string]any) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	_, err = k.r.d.ServingClient.AutoscalingV1alpha1().PodAutoscalers(pa.Namespace).Patch(ctx, pa.Name,
		types.MergePatchType, body, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		k.writeErr.Add(1)
		return fmt.Errorf("writing keep-alive annotations: %w", err)
	}
	k.writeOK.Add(1)
	return nil
}

// resync re-reads every PA's policy setting (a config-autoscaler change).
func (k *keepAlives) resync(pas []*autoscalingv1alpha1.PodAutoscaler) {
	for _, pa := range pas {
		k.sync(pa)
	}
}

// Describe implements part of prometheus.Collector.
func (k *keepAlives) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descKeepAlivePreWarm, descKeepAliveKeep, descKeepAliveIdle, descKeepAlivePreWarms,
		descKeepAliveRevs, descKeepAliveWrites} {
		ch <- d
	}
}

// Collect implements part of prometheus.Collector.
func (k *keepAlives) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descKeepAliveRevs, prometheus.GaugeValue, float64(len(k.revs)))
	ch <- prometheus.MustNewConstMetric(descKeepAliveWrites, prometheus.CounterValue, float64(k.writeOK.Load()), "ok")
	ch <- prometheus.MustNewConstMetric(descKeepAliveWrites, prometheus.CounterValue, float64(k.writeErr.Load()), "error")
	for key, rev := range k.revs {
		s := rev.pol.Summary()
		lv := []string{key.Namespace, key.Name, string(rev.mode), s.Mode}
		ch <- prometheus.MustNewConstMetric(descKeepAlivePreWarm, prometheus.GaugeValue, s.PreWarmSeconds, lv...)
		ch <- prometheus.MustNewConstMetric(descKeepAliveKeep, prometheus.GaugeValue, s.KeepAliveSeconds, lv...)
		ch <- prometheus.MustNewConstMetric(descKeepAliveIdle, prometheus.GaugeValue, float64(s.IdleTimes+s.OutOfBounds), lv...)
		ch <- prometheus.MustNewConstMetric(descKeepAlivePreWarms, prometheus.CounterValue, float64(rev.prewarms), lv[:3]...)
	}
}
