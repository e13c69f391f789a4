package observability

// Kind is an instrument's OpenTelemetry kind, which the Prometheus type alone does not tell: a
// Prometheus gauge is an OTel gauge or a non-monotonic sum (an UpDownCounter).
type Kind int

// Kinds of instruments.
const (
	KindGauge Kind = iota
	KindUpDownCounter
	KindCounter
	KindHistogram
)

// Instrument is how upstream declares one of its OpenTelemetry instruments: Thaw's Prometheus family
// of the same data is exported over OTLP under this name, unit, kind and scope, so that an OTLP
// backend sees what it sees from upstream. The Prometheus name is the one upstream's Prometheus
// exporter derives from these (otlptranslator's UnderscoreEscapingWithSuffixes); a test checks that.
type Instrument struct {
	Name, Unit string
	Kind       Kind
	// Int: the data points are integers (an Int64 instrument upstream).
	Int   bool
	Scope Scope
}

// Scope is an instrumentation scope: the meter an upstream instrument belongs to.
type Scope struct{ Name, Version string }

// The scopes of upstream's instruments.
var (
	ScopeActivator  = Scope{Name: "knative.dev/serving/pkg/activator"}
	ScopeAutoscaler = Scope{Name: "knative.dev/serving/pkg/autoscaler"}
	ScopeKube       = Scope{Name: "knative.dev/pkg/observability/metrics/k8s"}
	ScopeOtelHTTP   = Scope{Name: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", Version: "0.69.0"}
	ScopeRuntime    = Scope{Name: "go.opentelemetry.io/contrib/instrumentation/runtime", Version: "0.69.0"}
	// ScopeThaw holds Thaw's own families (thaw_*), exported under their Prometheus names.
	ScopeThaw = Scope{Name: "github.com/thaw-dev/thaw"}
)

// instruments maps a Prometheus family name to the upstream instrument it reproduces.
var instruments = map[string]Instrument{
	// Activator (serving pkg/activator, pkg/activator/handler).
	"kn_revision_request_concurrency":      {Name: "kn.revision.request.concurrency", Unit: "{request}", Kind: KindGauge, Scope: ScopeActivator},
	"kn_revision_request_queued":           {Name: "kn.revision.request.queued", Unit: "{request}", Kind: KindUpDownCounter, Int: true, Scope: ScopeActivator},
	"kn_revision_request_active":           {Name: "kn.revision.request.active", Unit: "{request}", Kind: KindUpDownCounter, Int: true, Scope: ScopeActivator},
	"kn_activator_stats_conn_reachable":    {Name: "kn.activator.stats.conn.reachable", Unit: "{reachable}", Kind: KindGauge, Int: true, Scope: ScopeActivator},
	"kn_activator_stats_conn_errors_total": {Name: "kn.activator.stats.conn.errors", Unit: "{error}", Kind: KindCounter, Int: true, Scope: ScopeActivator},
	"http_server_request_duration_seconds": {Name: "http.server.request.duration", Unit: "s", Kind: KindHistogram, Scope: ScopeOtelHTTP},
	"http_server_request_body_size_bytes":  {Name: "http.server.request.body.size", Unit: "By", Kind: KindHistogram, Int: true, Scope: ScopeOtelHTTP},
	"http_server_response_body_size_bytes": {Name: "http.server.response.body.size", Unit: "By", Kind: KindHistogram, Int: true, Scope: ScopeOtelHTTP},

	// Autoscaler (serving pkg/autoscaler/scaling, pkg/reconciler/autoscaling/kpa, pkg/autoscaler/metrics).
	"kn_revision_pods_desired":              {Name: "kn.revision.pods.desired", Unit: "{item}", Kind: KindGauge, Int: true, Scope: ScopeAutoscaler},
	"kn_revision_capacity_excess":           {Name: "kn.revision.capacity.excess", Unit: "{concurrency}", Kind: KindGauge, Scope: ScopeAutoscaler},
	"kn_revision_panic_mode":                {Name: "kn.revision.panic.mode", Kind: KindGauge, Int: true, Scope: ScopeAutoscaler},
	"kn_revision_concurrency_stable":        {Name: "kn.revision.concurrency.stable", Unit: "{concurrency}", Kind: KindGauge, Scope: ScopeAutoscaler},
	"kn_revision_concurrency_panic":         {Name: "kn.revision.concurrency.panic", Unit: "{concurrency}", Kind: KindGauge, Scope: ScopeAutoscaler},
	"kn_revision_concurrency_target":        {Name: "kn.revision.concurrency.target", Unit: "{concurrency}", Kind: KindGauge, Scope: ScopeAutoscaler},
	"kn_revision_rps_stable_per_second":     {Name: "kn.revision.rps.stable", Unit: "{request}/s", Kind: KindGauge, Scope: ScopeAutoscaler},
	"kn_revision_rps_panic_per_second":      {Name: "kn.revision.rps.panic", Unit: "{request}/s", Kind: KindGauge, Scope: ScopeAutoscaler},
	"kn_revision_rps_target_per_second":     {Name: "kn.revision.rps.target", Unit: "{request}/s", Kind: KindGauge, Scope: ScopeAutoscaler},
	"kn_revision_pods_requested":            {Name: "kn.revision.pods.requested", Unit: "{pod}", Kind: KindGauge, Int: true, Scope: ScopeAutoscaler},
	"kn_revision_pods_count":                {Name: "kn.revision.pods.count", Unit: "{pod}", Kind: KindGauge, Int: true, Scope: ScopeAutoscaler},
	"kn_revision_pods_not_ready_count":      {Name: "kn.revision.pods.not_ready.count", Unit: "{pod}", Kind: KindGauge, Int: true, Scope: ScopeAutoscaler},
	"kn_revision_pods_pending_count":        {Name: "kn.revision.pods.pending.count", Unit: "{pod}", Kind: KindGauge, Int: true, Scope: ScopeAutoscaler},
	"kn_revision_pods_terminating_count":    {Name: "kn.revision.pods.terminating.count", Unit: "{pod}", Kind: KindGauge, Int: true, Scope: ScopeAutoscaler},
	"kn_autoscaler_scrape_duration_seconds": {Name: "kn.autoscaler.scrape.duration", Unit: "s", Kind: KindHistogram, Scope: ScopeAutoscaler},

	// Kubernetes client and workqueues (knative.dev/pkg observability/metrics/k8s).
	"kn_workqueue_depth":                             {Name: "kn.workqueue.depth", Unit: "{item}", Kind: KindUpDownCounter, Int: true, Scope: ScopeKube},
	"kn_workqueue_adds_total":                        {Name: "kn.workqueue.adds", Unit: "{item}", Kind: KindCounter, Int: true, Scope: ScopeKube},
	"kn_workqueue_queue_duration_seconds":            {Name: "kn.workqueue.queue.duration", Unit: "s", Kind: KindHistogram, Scope: ScopeKube},
	"kn_workqueue_process_duration_seconds":          {Name: "kn.workqueue.process.duration", Unit: "s", Kind: KindHistogram, Scope: ScopeKube},
	"kn_workqueue_unfinished_work_seconds":           {Name: "kn.workqueue.unfinished_work", Unit: "s", Kind: KindGauge, Scope: ScopeKube},
	"kn_workqueue_longest_running_processor_seconds": {Name: "kn.workqueue.longest_running_processor", Unit: "s", Kind: KindGauge, Scope: ScopeKube},
	"kn_workqueue_retries_total":                     {Name: "kn.workqueue.retries", Unit: "{item}", Kind: KindCounter, Int: true, Scope: ScopeKube},
	// Both client-go's (ScopeKube) and otelhttp's (ScopeOtelHTTP): each series names its scope.
	"http_client_request_duration_seconds":          {Name: "http.client.request.duration", Unit: "s", Kind: KindHistogram, Scope: ScopeKube},
	"http_client_request_body_size_bytes":           {Name: "http.client.request.body.size", Unit: "By", Kind: KindHistogram, Int: true, Scope: ScopeOtelHTTP},
	"kn_k8s_client_http_response_status_code_total": {Name: "kn.k8s.client.http.response.status_code", Unit: "{item}", Kind: KindCounter, Int: true, Scope: ScopeKube},

	// Go runtime (go.opentelemetry.io/contrib/instrumentation/runtime).
	"go_memory_used_bytes":            {Name: "go.memory.used", Unit: "By", Kind: KindUpDownCounter, Int: true, Scope: ScopeRuntime},
	"go_memory_limit_bytes":           {Name: "go.memory.limit", Unit: "By", Kind: KindUpDownCounter, Int: true, Scope: ScopeRuntime},
	"go_memory_allocated_bytes_total": {Name: "go.memory.allocated", Unit: "By", Kind: KindCounter, Int: true, Scope: ScopeRuntime},
	"go_memory_allocations_total":     {Name: "go.memory.allocations", Unit: "{allocation}", Kind: KindCounter, Int: true, Scope: ScopeRuntime},
	"go_memory_gc_goal_bytes":         {Name: "go.memory.gc.goal", Unit: "By", Kind: KindUpDownCounter, Int: true, Scope: ScopeRuntime},
	"go_goroutine_count":              {Name: "go.goroutine.count", Unit: "{goroutine}", Kind: KindUpDownCounter, Int: true, Scope: ScopeRuntime},
	"go_processor_limit":              {Name: "go.processor.limit", Unit: "{thread}", Kind: KindUpDownCounter, Int: true, Scope: ScopeRuntime},
	"go_config_gogc_percent":          {Name: "go.config.gogc", Unit: "%", Kind: KindUpDownCounter, Int: true, Scope: ScopeRuntime},
}

// attributeKeys maps Prometheus label names back to upstream's attribute keys (Prometheus turns
// every '.' into '_', which cannot be undone by rule: kn_revision_name but not_ready).
var attributeKeys = map[string]string{
	"k8s_namespace_name":        "k8s.namespace.name",
	"kn_revision_name":          "kn.revision.name",
	"kn_service_name":           "kn.service.name",
	"kn_configuration_name":     "kn.configuration.name",
	"http_request_method":       "http.request.method",
	"http_response_status_code": "http.response.status_code",
	"network_protocol_name":     "network.protocol.name",
	"network_protocol_version":  "network.protocol.version",
	"server_address":            "server.address",
	"server_port":               "server.port",
	"url_scheme":                "url.scheme",
	"url_template":              "url.template",
	"go_memory_type":            "go.memory.type",
	"error_type":                "error.type",
	"otel_metric_overflow":      "otel.metric.overflow",
}

// scopes are the known scopes by name, for series that name theirs (otel_scope_name).
var scopes = map[string]Scope{}

func init() {
	for _, s := range []Scope{ScopeActivator, ScopeAutoscaler, ScopeKube, ScopeOtelHTTP, ScopeRuntime, ScopeThaw} {
		scopes[s.Name] = s
	}
}

// intAttributes are the attributes upstream records as integers.
var intAttributes = map[string]bool{"http.response.status_code": true, "server.port": true}

// Lookup returns the upstream instrument a Prometheus family reproduces. Families with no upstream
// twin (Thaw's thaw_* and client_golang's go_*/process_* collectors) are exported under their
// Prometheus name in Thaw's scope; ok is false for them.
func Lookup(family string) (in Instrument, ok bool) {
	if in, ok := instruments[family]; ok {
		return in, true
	}
	return Instrument{Name: family, Scope: ScopeThaw}, false
}

// attributeKey is the OTel key of a Prometheus label.
func attributeKey(label string) string {
	if k, ok := attributeKeys[label]; ok {
		return k
	}
	return label
}

// scoped reports whether a family carries otel_scope_* labels on upstream's Prometheus page: every
// family that comes through upstream's OTel pipeline does; client_golang's own collectors do not.
func scoped(family string) bool {
	_, ok := instruments[family]
	return ok
}
