package bucket

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	upstream "knative.dev/serving/pkg/autoscaler/bucket"

	"github.com/thaw-dev/thaw/internal/testutil"
)

// Names and key → bucket are upstream's exactly, or a mixed fleet would disagree on owners.
func TestSameAsUpstream(t *testing.T) {
	for total := uint32(1); total <= MaxBuckets; total++ {
		ours, theirs := NewSet(total), upstream.AutoscalerBucketSet(total)
		for i := range total {
			if got, want := Name(i, total), upstream.AutoscalerBucketName(i, total); got != want {
				t.Fatalf("Name(%d, %d) = %q, upstream %q", i, total, got, want)
			}
		}
		for i := range 2000 {
			key := types.NamespacedName{Namespace: fmt.Sprintf("ns-%d", i%17), Name: fmt.Sprintf("rev-%d", i)}
			if got, want := ours.Owner(key), theirs.Owner(key.String()); got != want {
				t.Fatalf("%d buckets: Owner(%s) = %s, upstream %s", total, key, got, want)
			}
		}
	}
	if !IsBucketHost("autoscaler-bucket-00-of-01.knative-serving.svc.cluster.local:8080") || IsBucketHost("autoscaler.knative-serving") {
		t.Error("IsBucketHost")
	}
}

func TestHolderIP(t *testing.T) {
	for _, tc := range []struct {
		id, ip string
		ok     bool
	}{
		{"autoscaler-abc-xyz_10.88.0.5", "10.88.0.5", true},
		{"autoscaler-abc_fd00::1", "fd00::1", true},
		{"controller-abc", "", false},
		{"pod_notanip", "", false},
	} {
		ip, ok := HolderIP(tc.id)
		if ip != tc.ip || ok != tc.ok {
			t.Errorf("HolderIP(%q) = %q, %v; want %q, %v", tc.id, ip, ok, tc.ip, tc.ok)
		}
	}
}

func TestConfigFromMap(t *testing.T) {
	for _, tc := range []struct {
		name string
		data map[string]string
		want Config
		err  string
	}{
		{"empty", nil, DefaultConfig, ""},
		{"ha as upstream's CI", map[string]string{"buckets": "10", "lease-duration": "15s", "renew-deadline": "10s", "retry-period": "2s"},
			Config{10, 15 * time.Second, 10 * time.Second, 2 * time.Second}, ""},
		{"zero buckets", map[string]string{"buckets": "0"}, Config{}, "buckets"},
		{"eleven buckets", map[string]string{"buckets": "11"}, Config{}, "buckets"},
		{"not a number", map[string]string{"buckets": "many"}, Config{}, "buckets"},
		{"renew after lease", map[string]string{"lease-duration": "10s", "renew-deadline": "15s"}, Config{}, "lease-duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromMap(tc.data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestEnsureEndpoints(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset()
	if err := EnsureEndpoints(ctx, kube, "knative-serving", "autoscaler-bucket-01-of-03", "10.88.0.7", 8080); err != nil {
		t.Fatal(err)
	}
	// A new owner takes the same objects over.
	if err := EnsureEndpoints(ctx, kube, "knative-serving", "autoscaler-bucket-01-of-03", "10.88.0.9", 8080); err != nil {
		t.Fatal(err)
	}
	svc, err := kube.CoreV1().Services("knative-serving").Get(ctx, "autoscaler-bucket-01-of-03", metav1.GetOptions{})
	if err != nil || svc.Spec.Ports[0].Name != "http" || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Selector != nil {
		t.Fatalf("service %+v, %v", svc, err)
	}
	es, err := kube.DiscoveryV1().EndpointSlices("knative-serving").Get(ctx, "autoscaler-bucket-01-of-03", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if es.Labels[discoveryv1.LabelServiceName] != "autoscaler-bucket-01-of-03" || es.Endpoints[0].Addresses[0] != "10.88.0.9" ||
		*es.Ports[0].Port != 8080 {
		t.Fatalf("slice %+v", es)
	}
}

// Two replicas over three buckets: together they hold each bucket exactly once; when one stops, the
// other takes its buckets over without a restart, and Demote/Promote are called for each move.
func TestElectorSharesAndHandsOver(t *testing.T) {
	kube := fake.NewClientset()
	set := NewSet(3)
	cfg := Config{Buckets: 3, LeaseDuration: 600 * time.Millisecond, RenewDeadline: 400 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}
	var mu sync.Mutex
	events := []string{}
	mk := func(id string) *Elector {
		return &Elector{Kube: kube, Namespace: "knative-serving", Identity: id, Set: set, Config: cfg,
			Logger: zaptest.NewLogger(t).Sugar(),
			Promote: func(_ context.Context, b string) {
				mu.Lock()
				events = append(events, "promote "+id+" "+b)
				mu.Unlock()
			},
			Demote: func(b string) {
				mu.Lock()
				events = append(events, "demote "+id+" "+b)
				mu.Unlock()
			}}
	}
	a, b := mk("a_10.0.0.1"), mk("b_10.0.0.2")
	actx, astop := context.WithCancel(context.Background())
	bctx, bstop := context.WithCancel(context.Background())
	defer bstop()
	adone, bdone := make(chan error, 1), make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	go func() { bdone <- b.Run(bctx) }()
	testutil.Eventually(t, "every bucket held once", func() bool {
		n := 0
		for _, bk := range set.Names() {
			ha, hb := a.OwnsBucket(bk), b.OwnsBucket(bk)
			if ha && hb {
				t.Fatalf("bucket %s held twice", bk)
			}
			if ha || hb {
				n++
			}
		}
		return n == 3
	})
	key := types.NamespacedName{Namespace: "ns", Name: "rev"}
	if a.Owns(key) == b.Owns(key) {
		t.Fatal("a key must have exactly one owner")
	}
	held := a.Owned()
	astop()
	if err := <-adone; err != nil {
		t.Fatal(err)
	}
	if len(a.Owned()) != 0 {
		t.Fatalf("stopped elector still owns %v", a.Owned())
	}
	testutil.Eventually(t, "b holds all buckets", func() bool { return len(b.Owned()) == 3 })
	// The Leases carry upstream's names and holder identity.
	l, err := kube.CoordinationV1().Leases("knative-serving").Get(context.Background(), Name(0, 3), metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "b_10.0.0.2" {
		t.Fatalf("lease %+v, %v", l, err)
	}
	bstop()
	if err := <-bdone; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, bk := range held {
		want := []string{"promote a_10.0.0.1 " + bk, "demote a_10.0.0.1 " + bk, "promote b_10.0.0.2 " + bk}
		i := 0
		for _, e := range events {
			if i < len(want) && e == want[i] {
				i++
			}
		}
		if i != len(want) {
			t.Errorf("bucket %s: events %v lack the order %v", bk, events, want)
		}
	}
}
