package activator

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzHandler feeds arbitrary hosts, revision and probe headers through the
// chain: every answer is a known status and nothing panics.
func FuzzHandler(f *testing.F) {
	f.Add("rev.ns.svc.cluster.local", "", "", "", "", "")
	f.Add("example.com", "rev", "ns", "", "", "")
	f.Add("x", "", "", "probe", "", "kube-probe/1")
	f.Add("x", "", "", "probe", "hash", "")
	f.Add("x", "", "", "activator", "", "")
	f.Add("a.b.svc.", "", "", "<script>", "", "")
	f.Fuzz(func(t *testing.T, host, rev, ns, probe, hash, ua string) {
		h := newTestHandler(t, &fakeThrottler{dests: []string{"pod"}}, okProxy, nil)
		r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
		r.Host = host
		for k, v := range map[string]string{"Knative-Serving-Revision": rev, "Knative-Serving-Namespace": ns,
			NetworkProbeHeader: probe, NetworkHashHeader: hash, "User-Agent": ua} {
			if v != "" {
				r.Header[k] = []string{v}
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound:
		default:
			t.Fatalf("status %d for host %q rev %q/%q probe %q", rec.Code, host, ns, rev, probe)
		}
	})
}
