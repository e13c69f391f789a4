// Package collector keeps, per revision, the metric windows the decider reads:
// concurrency and requests-per-second, each over the stable and the panic
// window. Stats come from the activators (through the stat server) and from
// the queue-proxy scraper; every stat of one second is summed into that
// second's bucket, so the windows hold revision-wide totals.
package collector

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/autoscaler/window"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// ScrapeInterval is how often a revision's scraper runs.
const ScrapeInterval = time.Second

// DefaultMaxFutureSkew bounds how far in the future a stat's timestamp may
// be. One far-future stat would otherwise move the window's newest second
// ahead and make every later stat "old" until the clock caught up.
const DefaultMaxFutureSkew = time.Minute

var (
	// ErrNoData means the stable window saw nothing for a whole window
	// while a scrape target exists, so no decision can be made yet.
	ErrNoData = errors.New("no data available")
	// ErrNotCollecting means the revision has no collection.
	ErrNotCollecting = errors.New("no metrics are being collected for the requested resource")
)

// Config is what the collection of one revision needs from its Metric.
type Config struct {
	StableWindow time.Duration
	PanicWindow  time.Duration
	// Weighted selects the weighted-exponential average instead of the
	// linear one.
	Weighted bool
	// ScrapeTarget is the private service to scrape; empty (TBC = −1) means
	// no scraping, and then an empty window means 0 rather than no data.
	ScrapeTarget string
}

// ConfigFromMetric reads a Config from a Metric.
func ConfigFromMetric(m *autoscalingv1alpha1.Metric) Config {
	return Config{
		StableWindow: m.Spec.StableWindow,
		PanicWindow:  m.Spec.PanicWindow,
		Weighted:     m.AggregationAlgorithm() == autoscaling.MetricAggregationAlgorithmWeightedExponential,
		ScrapeTarget: m.Spec.ScrapeTarget,
	}
}

// Scraper gathers one revision-wide stat from the revision's pods. A zero
// Stat means nothing to record.
type Scraper interface {
	Scrape(ctx context.Context, stableWindow time.Duration) (wire.Stat, error)
}

// ScraperFactory builds the scraper of a revision; it may return a nil
// Scraper when there is nothing to scrape.
type ScraperFactory func(key types.NamespacedName, cfg Config) (Scraper, error)

// Options configures a Collector.
type Options struct {
	Clock  clock.WithTicker
	Logger *zap.SugaredLogger
	// Scrapers builds per-revision scrapers; nil means no scraping.
	Scrapers ScraperFactory
	// OnChange is called (from the scrape goroutine) when a revision's
	// scrape error state changes, so that its Metric status is refreshed.
	OnChange func(types.NamespacedName)
	// MaxFutureSkew overrides DefaultMaxFutureSkew; negative disables it.
	MaxFutureSkew time.Duration
	// ScrapeGate, if set, is asked before each scrape: a revision whose
	// bucket another replica holds is scraped there, not here (its windows
	// are still fed, by the owner's mirrored scrapes). Nil scrapes all.
	ScrapeGate func(types.NamespacedName) bool
	// OnScrape, if set, is given every stat a scrape recorded, with its
	// time, so that the owner can mirror it to the other replicas.
	OnScrape func(types.NamespacedName, time.Time, wire.Stat)
}

// Drops counts stats that were not recorded.
type Drops struct {
	// UnknownRevision: a stat for a revision without a collection.
	UnknownRevision uint64
	// Invalid: a non-finite value or a timestamp too far in the future.
	Invalid uint64
	// Seeded: a stat of a second this replica took from a peer's snapshot, which counted it already
	// (a peer's forwarding backlog flushed after a restart).
	Seeded uint64
}

// Collector holds the collections of all revisions. It is safe for
// concurrent use.
type Collector struct {
	clock    clock.WithTicker
	logger   *zap.SugaredLogger
	scrapers ScraperFactory
	onChange atomic.Pointer[func(types.NamespacedName)]
	skew     time.Duration
	gate     func(types.NamespacedName) bool
	onScrape func(types.NamespacedName, time.Time, wire.Stat)

	mu   sync.RWMutex
	revs map[types.NamespacedName]*collection
	// pending holds seeded seconds of revisions whose collection does not exist yet.
	pending map[types.NamespacedName]pendingSeed

	droppedUnknown, droppedInvalid, droppedSeeded atomic.Uint64
	// horizon caches clock.Now()+skew in unix nanoseconds: a stat up to it
	// is not too far in the future, so most Records need no clock read.
	horizon atomic.Int64
}

// New returns an empty Collector.
func New(opts Options) *Collector {
	c := &Collector{
		clock:    opts.Clock,
		logger:   opts.Logger,
		scrapers: opts.Scrapers,
		skew:     opts.MaxFutureSkew,
		gate:     opts.ScrapeGate,
		onScrape: opts.OnScrape,
		revs:     make(map[types.NamespacedName]*collection),
	}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	if c.logger == nil {
		c.logger = zap.NewNop().Sugar()
	}
	if c.skew == 0 {
		c.skew = DefaultMaxFutureSkew
	}
	if opts.OnChange != nil {
		c.Watch(opts.OnChange)
	}
	return c
}

// Watch sets the callback told when a revision's scrape error state
// changes, replacing any earlier one (the Metric reconciler is built after
// the collector).
func (c *Collector) Watch(fn func(types.NamespacedName)) {
	c.onChange.Store(&fn)
}

// collection is one revision's windows. One mutex guards all four: a
// stat updates all of them together.
type collection struct {
	mu       sync.Mutex
	cfg      Config
	conc     window.Buckets
	concPnc  window.Buckets
	rps      window.Buckets
	rpsPnc   window.Buckets
	scraper  Scraper
	lastErr  error
	stop     context.CancelFunc
	finished chan struct{}
	// liveFrom is the unix second of the first stat recorded here (0: none yet); seeded seconds from
	// another replica are taken only before it.
	liveFrom int64
	// seededThrough is the newest second taken from another replica's snapshot (0: none). A stat of
	// that second or an older one arriving afterwards was in the snapshot already: the peers that
	// queued stats for this replica while it was down flush them once it is back, and recording them
	// would count those seconds twice.
	seededThrough int64
}

func newCollection(cfg Config) *collection {
	mk := window.NewLinear
	if cfg.Weighted {
		mk = window.NewWeighted
	}
	return &collection{
		cfg:     cfg,
		conc:    *mk(cfg.StableWindow),
		concPnc: *mk(cfg.PanicWindow),
		rps:     *mk(cfg.StableWindow),
		rpsPnc:  *mk(cfg.PanicWindow),
	}
}

// CreateOrUpdate creates the collection of key, or updates its windows (they
// resize, keeping recent data). The aggregation algorithm is fixed at
// creation, as it comes from an immutable revision annotation. It returns
// the last scrape error of an existing collection.
func (c *Collector) CreateOrUpdate(key types.NamespacedName, cfg Config) error {
	var scraper Scraper
	if c.scrapers != nil {
		s, err := c.scrapers(key, cfg)
		if err != nil {
			return err
		}
		scraper = s
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if col, ok := c.revs[key]; ok {
		now := c.clock.Now()
		col.mu.Lock()
		defer col.mu.Unlock()
		col.cfg = cfg
		col.scraper = scraper
		col.conc.Resize(now, cfg.StableWindow)
		col.concPnc.Resize(now, cfg.PanicWindow)
		col.rps.Resize(now, cfg.StableWindow)
		col.rpsPnc.Resize(now, cfg.PanicWindow)
		return col.lastErr
	}
	col := newCollection(cfg)
	col.scraper = scraper
	now := c.clock.Now()
	if secs := c.takePending(key, now); secs != nil {
		col.seed(secs, now)
	}
	c.revs[key] = col
	if c.scrapers != nil {
		ctx, cancel := context.WithCancel(context.Background())
		col.stop, col.finished = cancel, make(chan struct{})
		go c.scrapeLoop(ctx, key, col)
	}
	return nil
}

// Delete removes the collection of key and stops its scraping.
func (c *Collector) Delete(key types.NamespacedName) {
	c.mu.Lock()
	col, ok := c.revs[key]
	delete(c.revs, key)
	c.mu.Unlock()
	if ok && col.stop != nil {
		col.stop()
		<-col.finished
	}
}

// Close stops every scrape loop and removes every collection.
func (c *Collector) Close() {
	c.mu.Lock()
	revs := c.revs
	c.revs = make(map[types.NamespacedName]*collection)
	c.mu.Unlock()
	for _, col := range revs {
		if col.stop != nil {
			col.stop()
			<-col.finished
		}
	}
}

// Len returns the number of collections.
func (c *Collector) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.revs)
}

// Record adds a stat observed at t to the windows of key. Stats of unknown
// revisions are dropped (collections are created only by CreateOrUpdate, so
// memory is bounded by the Metrics that exist).
func (c *Collector) Record(key types.NamespacedName, t time.Time, s wire.Stat) {
	c.mu.RLock()
	col := c.revs[key]
	c.mu.RUnlock()
	if col == nil {
		if n := c.droppedUnknown.Add(1); n&(n-1) == 0 {
			// Sampled: logs at the 1st, 2nd, 4th, 8th... drop.
			c.logger.Infow("Dropped stat of an unknown revision", "key", key.String(), "dropped", n)
		}
		return
	}
	// Proxied requests were counted by the activator already.
	concurrency := s.AverageConcurrentRequests - s.AverageProxiedConcurrentRequests
	rps := s.RequestCount - s.ProxiedRequestCount
	if math.IsNaN(concurrency) || math.IsInf(concurrency, 0) || math.IsNaN(rps) || math.IsInf(rps, 0) ||
		c.tooNew(t) {
		// One NaN would poison the window sum for as long as stats keep coming.
		if n := c.droppedInvalid.Add(1); n&(n-1) == 0 {
			c.logger.Warnw("Dropped invalid stat", "key", key.String(), "time", t,
				"concurrency", concurrency, "rps", rps, "dropped", n)
		}
		return
	}
	col.mu.Lock()
	ok := col.record(t, concurrency, rps)
	col.mu.Unlock()
	if !ok {
		if n := c.droppedSeeded.Add(1); n&(n-1) == 0 {
			c.logger.Infow("Dropped a stat of a second taken from a peer's windows", "key", key.String(),
				"time", t, "dropped", n)
		}
	}
}

// maxUnixNanoSeconds is the first unix second UnixNano cannot represent.
const maxUnixNanoSeconds = math.MaxInt64 / int64(time.Second)

// tooNew reports whether t is more than the allowed skew ahead of the clock.
func (c *Collector) tooNew(t time.Time) bool {
	if c.skew < 0 {
		return false
	}
	if t.Unix() >= maxUnixNanoSeconds {
		// Past year 2262 UnixNano wraps, possibly to a value below the
		// horizon; such a stamp is too new by any skew.
		return true
	}
	tn := t.UnixNano()
	if tn <= c.horizon.Load() {
		return false
	}
	h := c.clock.Now().Add(c.skew).UnixNano()
	c.horizon.Store(h)
	return tn > h
}

// record adds a stat to the windows; false when its second came from a peer's snapshot.
func (col *collection) record(t time.Time, concurrency, rps float64) bool {
	if col.seededThrough != 0 && t.Unix() <= col.seededThrough {
		return false
	}
	if col.liveFrom == 0 {
		col.liveFrom = t.Unix()
	}
	col.conc.Record(t, concurrency)
	col.concPnc.Record(t, concurrency)
	col.rps.Record(t, rps)
	col.rpsPnc.Record(t, rps)
	return true
}

// Drops returns the counts of stats not recorded.
func (c *Collector) Drops() Drops {
	return Drops{UnknownRevision: c.droppedUnknown.Load(), Invalid: c.droppedInvalid.Load(), Seeded: c.droppedSeeded.Load()}
}

// StableAndPanicConcurrency returns the stable and panic window averages of
// concurrency for key as of now.
func (c *Collector) StableAndPanicConcurrency(key types.NamespacedName, now time.Time) (float64, float64, error) {
	return c.stableAndPanic(key, now, false)
}

// StableAndPanicRPS returns the stable and panic window averages of requests
// per second for key as of now.
func (c *Collector) StableAndPanicRPS(key types.NamespacedName, now time.Time) (float64, float64, error) {
	return c.stableAndPanic(key, now, true)
}

func (c *Collector) stableAndPanic(key types.NamespacedName, now time.Time, rps bool) (float64, float64, error) {
	c.mu.RLock()
	col := c.revs[key]
	c.mu.RUnlock()
	if col == nil {
		return 0, 0, ErrNotCollecting
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	stable, pnc := &col.conc, &col.concPnc
	if rps {
		stable, pnc = &col.rps, &col.rpsPnc
	}
	if col.cfg.ScrapeTarget != "" && stable.IsEmpty(now) {
		return 0, 0, ErrNoData
	}
	return stable.Average(now), pnc.Average(now), nil
}

// LastError returns the last scrape error of key.
func (c *Collector) LastError(key types.NamespacedName) error {
	c.mu.RLock()
	col := c.revs[key]
	c.mu.RUnlock()
	if col == nil {
		return ErrNotCollecting
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	return col.lastErr
}

// scrapeLoop scrapes key every ScrapeInterval until ctx ends. Scraping is
// network-bound, so each revision has its own loop; a scrape never holds the
// collection's lock.
func (c *Collector) scrapeLoop(ctx context.Context, key types.NamespacedName, col *collection) {
	defer close(col.finished)
	ticker := c.clock.NewTicker(ScrapeInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
		col.mu.Lock()
		scraper, cfg := col.scraper, col.cfg
		col.mu.Unlock()
		var (
			stat wire.Stat
			err  error
		)
		if c.gate != nil && !c.gate(key) {
			continue
		}
		if scraper != nil && cfg.ScrapeTarget != "" {
			stat, err = scraper.Scrape(ctx, cfg.StableWindow)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				c.logger.Errorw("Failed to scrape metrics", "key", key.String(), zap.Error(err))
			}
		}
		col.mu.Lock()
		// Compare by text: scrapers wrap their errors afresh on every
		// scrape, so identity would call a steady failure a change each
		// second; the Metric status shows the text, so only a new text
		// needs a refresh.
		changed := errText(err) != errText(col.lastErr)
		col.lastErr = err
		var at time.Time
		if stat != (wire.Stat{}) {
			at = c.clock.Now()
			// Not recorded here when this second came from a peer's snapshot (only the second a
			// restarted replica took it in); mirrored all the same, as the peers lack this scrape.
			col.record(at,
				stat.AverageConcurrentRequests-stat.AverageProxiedConcurrentRequests,
				stat.RequestCount-stat.ProxiedRequestCount)
		}
		col.mu.Unlock()
		if !at.IsZero() && c.onScrape != nil {
			c.onScrape(key, at, stat)
		}
		if fn := c.onChange.Load(); changed && fn != nil && *fn != nil {
			(*fn)(key)
		}
	}
}

// errText is err's message, or "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

var descDropped = prometheus.NewDesc("thaw_collector_stats_dropped_total",
	"Stats the collector did not record, by reason.", []string{"reason"}, nil)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- descDropped }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	d := c.Drops()
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(d.UnknownRevision), "unknown_revision")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(d.Invalid), "invalid")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(d.Seeded), "seeded")
}
