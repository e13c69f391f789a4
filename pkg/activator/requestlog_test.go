package activator

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequestLog(t *testing.T) {
	var out bytes.Buffer
	rl := NewRequestLogger(&out)
	h := newTestHandler(t, &fakeThrottler{dests: []string{"pod"}}, okProxy, func(c *testConfig) { c.RequestLog = rl })

	// Off by default.
	h.ServeHTTP(httptest.NewRecorder(), revRequest(http.MethodGet))
	if out.Len() != 0 {
		t.Fatalf("logged while off: %q", out.String())
	}
	if err := rl.SetTemplate("{{.Request.Method}} {{.Response.Code}} {{.Response.Size}} {{.Revision.Namespace}}/{{.Revision.Name}} {{.Revision.Service}} {{.TraceID}}"); err != nil {
		t.Fatal(err)
	}
	req := revRequest(http.MethodPost)
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	h.ServeHTTP(httptest.NewRecorder(), req)
	probe := httptest.NewRequest(http.MethodGet, "/", nil)
	probe.Header.Set("User-Agent", "kube-probe/1.36")
	h.ServeHTTP(httptest.NewRecorder(), probe)
	if want := "POST 200 14 ns/rev svc 0af7651916cd43dd8448eb211c80319c\n"; out.String() != want {
		t.Fatalf("log = %q, want %q", out.String(), want)
	}
	if err := rl.SetTemplate("{{.Nope"); err == nil {
		t.Fatal("invalid template accepted")
	}
	out.Reset()
	rl.SetTemplate("")
	h.ServeHTTP(httptest.NewRecorder(), revRequest(http.MethodGet))
	if out.Len() != 0 {
		t.Fatalf("logged after turning off: %q", out.String())
	}
}
