package activator

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
)

// RequestLogRevision, RequestLogResponse and RequestLogInput are the fields
// upstream's request-log templates can use.
type RequestLogRevision struct {
	Name, Namespace, Service, Configuration, PodName, PodIP string
}

// RequestLogResponse describes the answer; Latency is in seconds.
type RequestLogResponse struct {
	Code    int
	Size    int
	Latency float64
}

// RequestLogInput is the template's input.
type RequestLogInput struct {
	Request  *http.Request
	Response *RequestLogResponse
	Revision *RequestLogRevision
	TraceID  string
}

// RequestLogger writes one line per proxied request from a template
// (config-observability logging.request-log-template), swappable at run
// time. Probes are never logged.
type RequestLogger struct {
	tmpl atomic.Pointer[template.Template]
	mu   sync.Mutex
	out  io.Writer
}

// NewRequestLogger returns a logger writing to out, initially off.
func NewRequestLogger(out io.Writer) *RequestLogger { return &RequestLogger{out: out} }

// SetTemplate sets the template; "" turns request logging off.
func (l *RequestLogger) SetTemplate(s string) error {
	if s == "" {
		l.tmpl.Store(nil)
		return nil
	}
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	t, err := template.New("requestLog").Parse(s)
	if err != nil {
		return err
	}
	l.tmpl.Store(t)
	return nil
}

func (l *RequestLogger) enabled() bool { return l != nil && l.tmpl.Load() != nil }

func (l *RequestLogger) write(in *RequestLogInput) {
	t := l.tmpl.Load()
	if t == nil {
		return
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, in); err != nil {
		// A broken template logs its error instead of the line, as upstream.
		buf.Reset()
		buf.WriteString("Invalid request log template: " + err.Error() + "\n")
	}
	l.mu.Lock()
	l.out.Write(buf.Bytes())
	l.mu.Unlock()
}

// traceID extracts the W3C trace id from a traceparent header.
func traceID(h http.Header) string {
	tp := h.Get("Traceparent")
	if parts := strings.Split(tp, "-"); len(parts) >= 2 && len(parts[1]) == 32 {
		return parts[1]
	}
	return h.Get("X-B3-Traceid")
}
