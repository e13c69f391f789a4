package activator

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRequestLogTLS: upstream's system-internal-tls e2e test turns on the
// request log with the template "TLS: {{.Request.TLS}}" and looks in the
// activator's log for "TLS: {" (a request that came over TLS), never
// "TLS: <nil>".
func TestRequestLogTLS(t *testing.T) {
	var out bytes.Buffer
	rl := NewRequestLogger(&out)
	h := newTestHandler(t, &fakeThrottler{dests: []string{"pod"}}, okProxy, func(c *testConfig) { c.RequestLog = rl })
	if err := rl.SetTemplate("TLS: {{.Request.TLS}}"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tls  *tls.ConnectionState
		want string
	}{
		{tls: &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true}, want: "TLS: {772 true"},
		{want: "TLS: <nil>"},
	} {
		out.Reset()
		req := revRequest(http.MethodGet)
		req.TLS = tc.tls
		h.ServeHTTP(httptest.NewRecorder(), req)
		if !strings.HasPrefix(out.String(), tc.want) {
			t.Errorf("log %q, want it to start with %q", out.String(), tc.want)
		}
	}
}
