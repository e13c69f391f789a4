package observability

import (
	"math"
	"runtime/metrics"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// runtimeCollector reports the Go runtime instruments upstream gets from OTel's runtime
// instrumentation (go.memory.used, go.goroutine.count, …), from the same runtime/metrics samples, so
// the names a dashboard reads exist on Thaw's page too. client_golang's go_* collector stays beside it,
// as it does on upstream's page.
type runtimeCollector struct {
	mu      sync.Mutex
	samples []metrics.Sample
}

const (
	rtTotal       = "/memory/classes/total:bytes"
	rtReleased    = "/memory/classes/heap/released:bytes"
	rtStacks      = "/memory/classes/heap/stacks:bytes"
	rtLimit       = "/gc/gomemlimit:bytes"
	rtAllocated   = "/gc/heap/allocs:bytes"
	rtAllocations = "/gc/heap/allocs:objects"
	rtGoal        = "/gc/heap/goal:bytes"
	rtGoroutines  = "/sched/goroutines:goroutines"
	rtMaxProcs    = "/sched/gomaxprocs:threads"
	rtGOGC        = "/gc/gogc:percent"
)

var (
	descMemUsed     = prometheus.NewDesc("go_memory_used_bytes", "Memory used by the Go runtime.", []string{"go_memory_type"}, nil)
	descMemLimit    = prometheus.NewDesc("go_memory_limit_bytes", "Go runtime memory limit configured by the user, if a limit exists.", nil, nil)
	descAllocated   = prometheus.NewDesc("go_memory_allocated_bytes_total", "Memory allocated to the heap by the application.", nil, nil)
	descAllocations = prometheus.NewDesc("go_memory_allocations_total", "Count of allocations to the heap by the application.", nil, nil)
	descGoal        = prometheus.NewDesc("go_memory_gc_goal_bytes", "Heap size target for the end of the GC cycle.", nil, nil)
	descGoroutines  = prometheus.NewDesc("go_goroutine_count", "Count of live goroutines.", nil, nil)
	descProcs       = prometheus.NewDesc("go_processor_limit", "The number of OS threads that can execute user-level Go code simultaneously.", nil, nil)
	descGOGC        = prometheus.NewDesc("go_config_gogc_percent", "Heap size target percentage configured by the user, otherwise 100.", nil, nil)
)

func newRuntimeCollector() *runtimeCollector {
	c := &runtimeCollector{}
	for _, n := range []string{rtTotal, rtReleased, rtStacks, rtLimit, rtAllocated, rtAllocations, rtGoal,
		rtGoroutines, rtMaxProcs, rtGOGC} {
		c.samples = append(c.samples, metrics.Sample{Name: n})
	}
	return c
}

func (c *runtimeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMemUsed, descMemLimit, descAllocated, descAllocations, descGoal,
		descGoroutines, descProcs, descGOGC} {
		ch <- d
	}
}

func (c *runtimeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	metrics.Read(c.samples)
	v := make(map[string]float64, len(c.samples))
	for _, s := range c.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[s.Name] = float64(s.Value.Uint64())
		}
	}
	c.mu.Unlock()
	total := v[rtTotal] - v[rtReleased]
	ch <- prometheus.MustNewConstMetric(descMemUsed, prometheus.GaugeValue, v[rtStacks], "stack")
	ch <- prometheus.MustNewConstMetric(descMemUsed, prometheus.GaugeValue, total-v[rtStacks], "other")
	// As upstream: the limit only when one is set.
	if v[rtLimit] < math.MaxInt64 {
		ch <- prometheus.MustNewConstMetric(descMemLimit, prometheus.GaugeValue, v[rtLimit])
	}
	ch <- prometheus.MustNewConstMetric(descAllocated, prometheus.CounterValue, v[rtAllocated])
	ch <- prometheus.MustNewConstMetric(descAllocations, prometheus.CounterValue, v[rtAllocations])
	ch <- prometheus.MustNewConstMetric(descGoal, prometheus.GaugeValue, v[rtGoal])
	ch <- prometheus.MustNewConstMetric(descGoroutines, prometheus.GaugeValue, v[rtGoroutines])
	ch <- prometheus.MustNewConstMetric(descProcs, prometheus.GaugeValue, v[rtMaxProcs])
	ch <- prometheus.MustNewConstMetric(descGOGC, prometheus.GaugeValue, v[rtGOGC])
}
