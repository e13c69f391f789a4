package faultinject

import (
	"context"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// DefaultLogEvery is how often, at most, one fault's injections are logged: the first at once, then
// one line per interval with the number left out, so a fault on every request cannot flood the log.
const DefaultLogEvery = 10 * time.Second

// Options configure an Injector.
type Options struct {
	Component Component
	// Clock is the time source for expiry, delays and log sampling; nil is the real clock.
	Clock clock.WithDelayedExecution
	// Rand returns a number in [0, 1) for the probabilities; it must be safe for concurrent use. Nil
	// is math/rand/v2's Float64.
	Rand func() float64
	// Logger gets one line per ConfigMap change and sampled lines per injected fault.
	Logger *zap.SugaredLogger
	// Registerer, if set, gets thaw_fault_injected_total and thaw_fault_injection_active; or register
	// Collectors later.
	Registerer prometheus.Registerer
	// LogEvery samples the injection log; 0 is DefaultLogEvery.
	LogEvery time.Duration
}

// Injector holds the faults in force for one component and decides, at each opportunity, whether
// to inject one. It is safe for concurrent use; the faults are swapped atomically on each ConfigMap
// change, so deciding takes no lock.
type Injector struct {
	o        Options
	set      atomic.Pointer[activeSet]
	injected *prometheus.CounterVec

	logMu sync.Mutex
	logs  map[Fault]*sampled

	// changeMu guards the change callbacks and the expiry timers of the faults in force.
	changeMu sync.Mutex
	onChange []func()
	expiries []clock.Timer
}

// activeSet is a Set as applied, with the once-only expiry notices.
type activeSet struct {
	specs   Set
	expired map[Fault]*atomic.Bool
}

type sampled struct {
	last    time.Time
	skipped int
}

// New returns an Injector with no fault in force.
func New(o Options) *Injector {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop().Sugar()
	}
	if o.LogEvery <= 0 {
		o.LogEvery = DefaultLogEvery
	}
	i := &Injector{o: o, logs: map[Fault]*sampled{}}
	i.injected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "thaw_fault_injected_total",
		Help: "Faults injected on purpose (THAW_FAULT_INJECTION=enabled and the thaw-fault-injection ConfigMap).",
	}, []string{"component", "fault"})
	i.set.Store(&activeSet{specs: Set{}})
	if o.Registerer != nil {
		o.Registerer.MustRegister(i.Collectors()...)
	}
	return i
}

// Collectors are the Injector's metrics, for a registry made after it.
func (i *Injector) Collectors() []prometheus.Collector {
	return []prometheus.Collector{i.injected, activeCollector{i}}
}

// Apply parses the ConfigMap's data and puts its valid faults in force, replacing the previous ones.
// The faults applied are logged in one line; invalid keys in one error line, and returned.
func (i *Injector) Apply(data map[string]string) error {
	set, err := Parse(i.o.Component, data)
	i.store(set)
	if err != nil {
		i.o.Logger.Errorw("Invalid fault injection settings; those faults are not applied",
			"configmap", ConfigMapName, "error", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	i.o.Logger.Infow("Fault injection settings applied", "configmap", ConfigMapName, "faults", describe(set))
	return err
}

// Clear removes every fault (the ConfigMap was deleted).
func (i *Injector) Clear() {
	i.store(Set{})
	i.o.Logger.Infow("Fault injection cleared", "configmap", ConfigMapName)
}

// OnChange registers f, called after every change of the faults in force: each ConfigMap change
// and each fault's expiry. Callbacks must not block. The autoscaler uses it to act on fresh
// decisions the moment a freeze ends.
func (i *Injector) OnChange(f func()) {
	i.changeMu.Lock()
	i.onChange = append(i.onChange, f)
	i.changeMu.Unlock()
}

func (i *Injector) store(s Set) {
	a := &activeSet{specs: s, expired: make(map[Fault]*atomic.Bool, len(s))}
	for f := range s {
		a.expired[f] = &atomic.Bool{}
	}
	i.changeMu.Lock()
	i.set.Store(a)
	for _, t := range i.expiries {
		t.Stop()
	}
	i.expiries = i.expiries[:0]
	now := i.o.Clock.Now()
	for _, sp := range s {
		if d := sp.Until.Sub(now); !sp.Until.IsZero() && d > 0 {
			until := sp.Until
			i.expiries = append(i.expiries, i.o.Clock.AfterFunc(d, func() {
				// A timer stopped too late finds another set in force and stays quiet. The callback
				// must not read the clock: a fake clock runs it under its own lock.
				if i.set.Load() == a {
					i.noteExpired(a, until)
					i.changed()
				}
			}))
		}
	}
	i.changeMu.Unlock()
	i.changed()
}

func (i *Injector) changed() {
	i.changeMu.Lock()
	fs := append([]func(){}, i.onChange...)
	i.changeMu.Unlock()
	for _, f := range fs {
		f()
	}
}

// Current returns a copy of the faults in force (including expired ones).
func (i *Injector) Current() Set {
	cur := i.set.Load().specs
	out := make(Set, len(cur))
	for f, s := range cur {
		out[f] = s
	}
	return out
}

// active returns f's spec when it is set and not expired.
func (i *Injector) active(f Fault) (Spec, bool) {
	a := i.set.Load()
	s, ok := a.specs[f]
	if !ok {
		return Spec{}, false
	}
	if !s.Until.IsZero() && !i.o.Clock.Now().Before(s.Until) {
		i.logExpired(a, f, s)
		return Spec{}, false
	}
	return s, true
}

// noteExpired logs the faults of a that expire at or before until (from the timer of until).
func (i *Injector) noteExpired(a *activeSet, until time.Time) {
	for f, s := range a.specs {
		if !s.Until.IsZero() && !until.Before(s.Until) {
			i.logExpired(a, f, s)
		}
	}
}

// logExpired logs f's expiry once per setting, whoever sees it first (its timer or a decision).
func (i *Injector) logExpired(a *activeSet, f Fault, s Spec) {
	if a.expired[f].CompareAndSwap(false, true) {
		i.o.Logger.Infow("Fault expired; no longer injected", "fault", string(f), "until", s.Until)
	}
}

// fire decides whether to inject f now: it is in force and the draw falls under its probability.
// An injection is counted and logged (sampled) with kv as context.
func (i *Injector) fire(f Fault, kv ...any) (Spec, bool) {
	s, ok := i.active(f)
	if !ok {
		return Spec{}, false
	}
	if s.Probability < 1 && !(i.o.Rand() < s.Probability) {
		return Spec{}, false
	}
	i.record(f, kv...)
	return s, true
}

// record counts one injection of f and logs it, at most once per LogEvery per fault.
func (i *Injector) record(f Fault, kv ...any) {
	i.injected.WithLabelValues(string(i.o.Component), f.Name()).Inc()
	now := i.o.Clock.Now()
	i.logMu.Lock()
	l := i.logs[f]
	if l == nil {
		l = &sampled{}
		i.logs[f] = l
	}
	if !l.last.IsZero() && now.Sub(l.last) < i.o.LogEvery {
		l.skipped++
		i.logMu.Unlock()
		return
	}
	skipped := l.skipped
	l.last, l.skipped = now, 0
	i.logMu.Unlock()
	i.o.Logger.Infow("Injected fault", append([]any{"fault", string(f), "notLoggedSinceLast", skipped}, kv...)...)
}

// wait sleeps d on the injected clock, or until ctx ends.
func (i *Injector) wait(ctx context.Context, d time.Duration) error {
	t := i.o.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

func describe(s Set) []string {
	out := make([]string, 0, len(s))
	for f, sp := range s {
		d := string(f)
		if sp.Probability < 1 {
			d += " p=" + strconv.FormatFloat(sp.Probability, 'g', -1, 64)
		}
		if sp.Delay > 0 {
			d += " delay=" + sp.Delay.String()
		}
		if sp.Reset {
			d += " status=reset"
		} else if sp.Status != 0 {
			d += " status=" + strconv.Itoa(sp.Status)
		}
		if !sp.Until.IsZero() {
			d += " until=" + sp.Until.UTC().Format(time.RFC3339)
		}
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

var descActive = prometheus.NewDesc("thaw_fault_injection_active",
	"1 for each fault in force (set in the thaw-fault-injection ConfigMap and not expired).",
	[]string{"component", "fault"}, nil)

// activeCollector reports the faults in force at scrape time.
type activeCollector struct{ i *Injector }

func (c activeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descActive }

func (c activeCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.i.o.Clock.Now()
	for f, s := range c.i.set.Load().specs {
		if s.Until.IsZero() || now.Before(s.Until) {
			ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, 1, string(c.i.o.Component), f.Name())
		}
	}
}

// Name, OnConfigMap and OnDelete let the Injector be fed by a ConfigMap watch of ConfigMapName.
func (i *Injector) Name() string { return ConfigMapName }

// OnConfigMap applies the ConfigMap's data.
func (i *Injector) OnConfigMap(cm *corev1.ConfigMap) error { return i.Apply(cm.Data) }

// OnDelete clears every fault.
func (i *Injector) OnDelete() { i.Clear() }
