package revisions

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"knative.dev/pkg/apis"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
)

func rev(ns, name string, mut ...func(*servingv1.Revision)) *servingv1.Revision {
	r := &servingv1.Revision{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: "uid-" + types.UID(name)},
		Spec: servingv1.RevisionSpec{PodSpec: corev1.PodSpec{Containers: []corev1.Container{{
			Image: "app", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}}},
	}
	for _, m := range mut {
		m(r)
	}
	return r
}

func TestFromRevision(t *testing.T) {
	tests := []struct {
		name string
		rev  *servingv1.Revision
		want Info
	}{{
		name: "defaults",
		rev:  rev("ns", "r"),
		want: Info{Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second, ProbeOptimisation: true},
	}, {
		name: "explicit fields",
		rev: rev("ns", "r", func(r *servingv1.Revision) {
			r.Spec.ContainerConcurrency = ptr.To[int64](3)
			r.Spec.TimeoutSeconds = ptr.To[int64](10)
			r.Spec.ResponseStartTimeoutSeconds = ptr.To[int64](5)
			r.Spec.IdleTimeoutSeconds = ptr.To[int64](7)
			r.Spec.Containers[0].Ports[0].Name = "h2c"
			r.Annotations = map[string]string{FullDuplexAnnotation: "Enabled"}
			r.Labels = map[string]string{serving.ServiceLabelKey: "svc", serving.ConfigurationLabelKey: "cfg"}
		}),
		want: Info{ContainerConcurrency: 3, Timeout: 10 * time.Second, ResponseStartTimeout: 5 * time.Second,
			IdleTimeout: 7 * time.Second, H2C: true, FullDuplex: true, ProbeOptimisation: true,
			Service: "svc", Configuration: "cfg"},
	}, {
		name: "full duplex other value",
		rev: rev("ns", "r", func(r *servingv1.Revision) {
			r.Annotations = map[string]string{FullDuplexAnnotation: "Disabled"}
			r.Spec.Containers[0].Ports[0].Name = "http1"
		}),
		want: Info{Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second, ProbeOptimisation: true},
	}, {
		name: "exec readiness probe disables probe optimisation",
		rev: rev("ns", "r", func(r *servingv1.Revision) {
			r.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
		}),
		want: Info{Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second},
	}, {
		name: "http readiness probe keeps probe optimisation",
		rev: rev("ns", "r", func(r *servingv1.Revision) {
			r.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/"}}}
		}),
		want: Info{Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second, ProbeOptimisation: true},
	}, {
		name: "startup probe disables probe optimisation",
		rev: rev("ns", "r", func(r *servingv1.Revision) {
			r.Spec.Containers[0].StartupProbe = &corev1.Probe{}
		}),
		want: Info{Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second},
	}, {
		name: "sidecar startup probe disables probe optimisation",
		rev: rev("ns", "r", func(r *servingv1.Revision) {
			r.Spec.Containers = append([]corev1.Container{{Image: "side", StartupProbe: &corev1.Probe{}}}, r.Spec.Containers...)
		}),
		want: Info{Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second},
	}, {
		name: "zero container concurrency means unlimited",
		rev: rev("ns", "r", func(r *servingv1.Revision) {
			r.Spec.ContainerConcurrency = ptr.To[int64](0)
		}),
		want: Info{Timeout: 300 * time.Second, ResponseStartTimeout: 300 * time.Second, ProbeOptimisation: true},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := FromRevision(tc.rev)
			tc.want.ID = types.NamespacedName{Namespace: "ns", Name: "r"}
			tc.want.UID = "uid-r"
			if *got != tc.want {
				t.Errorf("FromRevision =\n%+v, want\n%+v", *got, tc.want)
			}
			// The protocol must agree with upstream's own helper.
			if wantH2C := tc.rev.GetProtocol() == "h2c"; got.H2C != wantH2C {
				t.Errorf("H2C = %v, upstream GetProtocol says %v", got.H2C, wantH2C)
			}
		})
	}
}

func TestPortName(t *testing.T) {
	if got := (&Info{}).PortName(); got != "http" {
		t.Errorf("PortName = %q, want http", got)
	}
	if got := (&Info{H2C: true}).PortName(); got != "http2" {
		t.Errorf("PortName(h2c) = %q, want http2", got)
	}
}

func TestFromRequest(t *testing.T) {
	tests := []struct {
		name    string
		host    string
		headers map[string]string
		want    types.NamespacedName
		wantErr bool
	}{
		{name: "headers", host: "example.com", headers: map[string]string{RevisionHeader: "r", NamespaceHeader: "ns"}, want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "headers win over host", host: "a.b.svc.cluster.local", headers: map[string]string{RevisionHeader: "r", NamespaceHeader: "ns"}, want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "full host", host: "r.ns.svc.cluster.local", want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "full host port", host: "r.ns.svc.cluster.local:80", want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "full host trailing dot", host: "r.ns.svc.cluster.local.", want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "svc host", host: "r.ns.svc", want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "short host with port", host: "r.ns:8012", want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "only one header falls back to host", host: "r.ns.svc", headers: map[string]string{RevisionHeader: "x"}, want: types.NamespacedName{Namespace: "ns", Name: "r"}},
		{name: "other cluster domain", host: "r.ns.svc.other.local", wantErr: true},
		{name: "external host", host: "r.ns.example.com", wantErr: true},
		{name: "bare name", host: "r", wantErr: true},
		{name: "empty", host: "", wantErr: true},
		{name: "ip", host: "10.0.0.1:8012", wantErr: true},
		{name: "empty labels", host: ".ns.svc", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://x/", nil)
			r.Host = tc.host
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			got, err := FromRequest(r, "cluster.local")
			if tc.wantErr {
				if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrNoRevision) {
					t.Fatalf("FromRequest(%q) = %v, %v; want ErrNoRevision", tc.host, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FromRequest(%q) = %v, %v; want %v", tc.host, got, err, tc.want)
			}
		})
	}
}

type events struct {
	mu      sync.Mutex
	upserts []*Info
	deletes []types.NamespacedName
}

func (e *events) counts() (int, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.upserts), len(e.deletes)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}

func TestStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	client := fake.NewSimpleClientset(rev("ns", "a"))
	s := NewStore(client, 0, zaptest.NewLogger(t).Sugar())
	var ev events
	s.OnUpsert(func(i *Info) { ev.mu.Lock(); ev.upserts = append(ev.upserts, i); ev.mu.Unlock() })
	s.OnDelete(func(id types.NamespacedName) { ev.mu.Lock(); ev.deletes = append(ev.deletes, id); ev.mu.Unlock() })
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done // Run must return once ctx ends.
	})
	if !s.WaitForSync(ctx) {
		t.Fatal("WaitForSync = false")
	}

	if info, err := s.Get("ns", "a"); err != nil || info.ID.Name != "a" {
		t.Fatalf("Get(ns/a) = %v, %v", info, err)
	}
	if _, err := s.Get("ns", "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) err = %v, want ErrNotFound", err)
	}

	b := rev("ns", "b", func(r *servingv1.Revision) { r.Spec.ContainerConcurrency = ptr.To[int64](1) })
	if _, err := client.ServingV1().Revisions("ns").Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b upserted", func() bool { u, _ := ev.counts(); return u == 2 })
	if info, err := s.Get("ns", "b"); err != nil || info.ContainerConcurrency != 1 {
		t.Fatalf("Get(ns/b) = %+v, %v", info, err)
	}

	b.Spec.ContainerConcurrency = ptr.To[int64](5)
	if _, err := client.ServingV1().Revisions("ns").Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b updated", func() bool { info, err := s.Get("ns", "b"); return err == nil && info.ContainerConcurrency == 5 })

	if err := client.ServingV1().Revisions("ns").Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b deleted", func() bool { _, d := ev.counts(); return d == 1 })
	if _, err := s.Get("ns", "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delete err = %v, want ErrNotFound", err)
	}
	ev.mu.Lock()
	if got := ev.deletes[0]; got != (types.NamespacedName{Namespace: "ns", Name: "b"}) {
		t.Errorf("deleted %v, want ns/b", got)
	}
	ev.mu.Unlock()
}

// TestHold: updates keep a revision live for requests holding an older Info; a deletion waits for
// holders, then ends the life of every Info of the revision; a revision created again lives anew.
func TestHold(t *testing.T) {
	s := &Store{logger: zaptest.NewLogger(t).Sugar(), infos: map[types.NamespacedName]*Info{}}
	handled := make(chan struct{}, 1)
	s.OnDelete(func(types.NamespacedName) { handled <- struct{}{} })
	s.upsert(rev("ns", "a"))
	first, _ := s.Get("ns", "a")
	s.upsert(rev("ns", "a", func(r *servingv1.Revision) { r.Spec.ContainerConcurrency = ptr.To[int64](3) }))
	second, _ := s.Get("ns", "a")
	if first == second || !first.Hold() {
		t.Fatal("an updated revision must stay live for the older Info")
	}
	go s.delete(rev("ns", "a"))
	// The explicit signal that the deletion reached the hold: a writer waiting on the revision's life
	// makes TryRLock refuse. Were the deletion not to wait for the hold, that never happens and this fails.
	testutil.Eventually(t, "the deletion waiting for the held request", func() bool {
		if first.life.mu.TryRLock() {
			first.life.mu.RUnlock()
			return false
		}
		return true
	})
	select {
	case <-handled:
		t.Fatal("delete handlers ran while a request held the revision")
	default:
	}
	first.Release()
	<-handled
	if first.Hold() || second.Hold() {
		t.Fatal("Hold succeeded after the deletion")
	}
	s.upsert(rev("ns", "a"))
	third, _ := s.Get("ns", "a")
	if !third.Hold() {
		t.Fatal("a revision created again is not live")
	}
	third.Release()
	if first.Hold() {
		t.Fatal("the re-creation revived an Info of the deleted revision")
	}
	if !(&Info{}).Hold() {
		t.Fatal("an Info made outside a Store must be live")
	}
}

func TestCannotStart(t *testing.T) {
	cond := func(typ apis.ConditionType, status corev1.ConditionStatus, reason, msg string) apis.Condition {
		return apis.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
	}
	tests := []struct {
		name  string
		conds []apis.Condition
		want  string
	}{
		{name: "no status"},
		{name: "ready", conds: []apis.Condition{cond("Ready", "True", "", "")}},
		{name: "scaled to zero", conds: []apis.Condition{cond("Ready", "True", "", ""), cond("Active", "False", "NoTraffic", "")}},
		{name: "starting", conds: []apis.Condition{cond("Ready", "Unknown", "Deploying", ""), cond("ResourcesAvailable", "Unknown", "Deploying", "")}},
		{name: "image pull", conds: []apis.Condition{cond("Ready", "False", "ImagePullBackOff", ""),
			cond("ResourcesAvailable", "False", "ImagePullBackOff", "Back-off pulling image \"nope\"")},
			want: "ImagePullBackOff: Back-off pulling image \"nope\""},
		{name: "crashing", conds: []apis.Condition{cond("Ready", "False", "ExitCode1", ""),
			cond("ResourcesAvailable", "Unknown", "", ""), cond("ContainerHealthy", "False", "ExitCode1", "")}, want: "ExitCode1"},
		{name: "a container killed once (SIGKILL) is no reason at zero", conds: []apis.Condition{cond("Ready", "False", "ExitCode137", ""),
			cond("ResourcesAvailable", "True", "", ""), cond("ContainerHealthy", "False", "ExitCode137", "Container failed with: ")}},
		{name: "nor one stopped by SIGTERM", conds: []apis.Condition{cond("Ready", "False", "ExitCode143", ""),
			cond("ContainerHealthy", "False", "ExitCode143", "")}},
		{name: "killed, then crash looping", conds: []apis.Condition{cond("Ready", "False", "ExitCode137", ""),
			cond("ContainerHealthy", "False", "ExitCode137", ""), cond("Active", "Unknown", "CrashLoopBackOff", "back-off 20s")},
			want: "CrashLoopBackOff: back-off 20s"},
		{name: "ready false for another reason", conds: []apis.Condition{cond("Ready", "False", "Other", ""),
			cond("ResourcesAvailable", "True", "", ""), cond("ContainerHealthy", "True", "", "")}},
		// Pod-level reasons from Thaw's autoscaler, through the PodAutoscaler, in the Active condition of a
		// Revision that is still Ready.
		{name: "activating, image pull back-off", conds: []apis.Condition{cond("Ready", "True", "", ""),
			cond("Active", "Unknown", "ImagePullBackOff", "container user-container: Back-off pulling image \"nope\"")},
			want: "ImagePullBackOff: container user-container: Back-off pulling image \"nope\""},
		{name: "activating, crash loop", conds: []apis.Condition{cond("Ready", "True", "", ""),
			cond("Active", "Unknown", "CrashLoopBackOff", "back-off 10s")}, want: "CrashLoopBackOff: back-off 10s"},
		{name: "activating, unschedulable", conds: []apis.Condition{cond("Active", "Unknown", "Unschedulable", "")}, want: "Unschedulable"},
		{name: "activating, queued", conds: []apis.Condition{cond("Ready", "True", "", ""), cond("Active", "Unknown", "Queued", "")}},
		{name: "active with a stale reason", conds: []apis.Condition{cond("Active", "True", "CrashLoopBackOff", "")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rev("ns", "a")
			r.Status.Conditions = tc.conds
			if got := FromRevision(r).CannotStart; got != tc.want {
				t.Fatalf("CannotStart = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCannotStartThroughUpstreamsReconciler: the reason Thaw's autoscaler puts in an activating
// PodAutoscaler reaches the Revision as upstream's revision reconciler propagates it (its own
// PropagateAutoscalerStatus), and clears the same way when the pods can start.
func TestCannotStartThroughUpstreamsReconciler(t *testing.T) {
	pa := &autoscalingv1alpha1.PodAutoscaler{}
	pa.Status.InitializeConditions()
	pa.Status.ServiceName = "a"
	pa.Status.MarkScaleTargetInitialized()
	pa.Status.MarkSKSReady()
	r := rev("ns", "a")
	r.Status.InitializeConditions()
	r.Status.MarkResourcesAvailableTrue()
	r.Status.MarkContainerHealthyTrue()

	pa.Status.MarkActivating("ErrImagePull", "container user-container: lookup ko.local: no such host")
	r.Status.PropagateAutoscalerStatus(&pa.Status)
	if !r.IsReady() {
		t.Fatal("a Revision scaled to zero stays Ready while it activates")
	}
	if got, want := FromRevision(r).CannotStart, "ErrImagePull: container user-container: lookup ko.local: no such host"; got != want {
		t.Fatalf("CannotStart = %q, want %q", got, want)
	}
	pa.Status.MarkActivating("Queued", "Requests to the target are being buffered as resources are provisioned.")
	r.Status.PropagateAutoscalerStatus(&pa.Status)
	if got := FromRevision(r).CannotStart; got != "" {
		t.Fatalf("CannotStart = %q once the pods can start, want none", got)
	}
}
