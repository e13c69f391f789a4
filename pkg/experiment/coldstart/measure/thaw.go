package measure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/thaw-dev/thaw/pkg/coldstart"
)

// The contract's names, so the runner needs one import for Thaw's timing.
const (
	// RequestHeader asks Thaw's activator for ResponseHeader; upstream ignores it.
	RequestHeader = coldstart.RequestHeader
	// ResponseHeader carries Thaw's activator timeline, or "warm".
	ResponseHeader = coldstart.ResponseHeader
)

// ParseHeader decodes a ResponseHeader value; warm is true for "warm".
func ParseHeader(v string) (coldstart.ActivatorTimeline, bool, error) {
	return coldstart.ParseHeader(v)
}

// ScaleRecord is one cold start as Thaw's autoscaler saw it (GET /debug/coldstarts on :9090).
type ScaleRecord = coldstart.ScaleRecord

// ErrNoDebugEndpoint means no autoscaler pod serves /debug/coldstarts (upstream's does not).
var ErrNoDebugEndpoint = errors.New("no autoscaler serves /debug/coldstarts")

// ScaleRecords reads /debug/coldstarts from every running autoscaler pod in systemNS through the
// apiserver's pod proxy, and merges the answers.
func ScaleRecords(ctx context.Context, kc kubernetes.Interface, systemNS string) ([]ScaleRecord, error) {
	pods, err := kc.CoreV1().Pods(systemNS).List(ctx, metav1.ListOptions{LabelSelector: "app=autoscaler"})
	if err != nil {
		return nil, err
	}
	var out []ScaleRecord
	served := false
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		b, err := kc.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces", systemNS, "pods", p.Name+":9090", "proxy/debug/coldstarts").DoRaw(ctx)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("autoscaler %s /debug/coldstarts: %w", p.Name, err)
		}
		recs, err := ParseScaleRecords(b)
		if err != nil {
			return nil, fmt.Errorf("autoscaler %s: %w", p.Name, err)
		}
		served = true
		out = append(out, recs...)
	}
	if !served {
		return nil, ErrNoDebugEndpoint
	}
	return out, nil
}

// ParseScaleRecords decodes a /debug/coldstarts answer.
func ParseScaleRecords(b []byte) ([]ScaleRecord, error) {
	var recs []ScaleRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("/debug/coldstarts is not a JSON array of records: %w", err)
	}
	return recs, nil
}

// recordStart is when a record's cold start began at the autoscaler: the poke, or the decision when
// the scale-up came from a periodic stat instead.
func recordStart(r ScaleRecord) time.Time {
	if r.PokeReceived.IsZero() {
		return r.Decided
	}
	return r.PokeReceived
}

// MatchScaleRecord returns the earliest record of ns/revision that started within [from, to].
func MatchScaleRecord(recs []ScaleRecord, ns, revision string, from, to time.Time) (ScaleRecord, bool) {
	var best ScaleRecord
	found := false
	for _, r := range recs {
		st := recordStart(r)
		if r.Namespace != ns || r.Revision != revision || st.Before(from) || st.After(to) {
			continue
		}
		if !found || st.Before(recordStart(best)) {
			best, found = r, true
		}
	}
	return best, found
}
