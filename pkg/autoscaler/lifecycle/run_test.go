package lifecycle

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	fakekube "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	fakenet "knative.dev/networking/pkg/client/clientset/versioned/fake"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	fakeserving "knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/bucket"
	"github.com/thaw-dev/thaw/pkg/wire"
)

const (
	sysNS  = "knative-serving"
	podIP  = "192.0.2.10" // never dialled: only the Lease holder identity
	podNam = "autoscaler-0"
)

var rev = types.NamespacedName{Namespace: "ns", Name: "rev"}

type okProber struct{}

func (okProber) Probe(context.Context, string) (bool, error) { return true, nil }

// scalePatches records /scale patches made through the dynamic client.
type scalePatches struct {
	mu      sync.Mutex
	patches []string
}

func (s *scalePatches) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.patches...)
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	testutil.Eventually(t, what, f)
}

// harness is a running process against fake API clients.
type harness struct {
	kube    *fakekube.Clientset
	serving *fakeserving.Clientset
	net     *fakenet.Clientset
	scales  *scalePatches
	dyn     *dynamicfake.FakeDynamicClient
	// leaseUpdate, if set, may answer Lease updates (installed before Run: adding a reactor to a fake
	// clientset in use races with its readers).
	leaseUpdate atomic.Pointer[func(*coordinationv1.Lease) error]
	addrs       [2]string // stat server, metrics
	cancel      context.CancelFunc
	done        chan error

	stopOnce sync.Once
	stopErr  error
}

// stop ends run as SIGTERM would and returns its result.
func (h *harness) stop(t *testing.T) error {
	h.stopOnce.Do(func() {
		h.cancel()
		select {
		case h.stopErr = <-h.done:
		case <-time.After(15 * time.Second):
			t.Error("run did not stop")
			h.stopErr = errors.New("run did not stop")
		}
	})
	return h.stopErr
}

func newPA(name string) *autoscalingv1alpha1.PodAutoscaler {
	pa := &autoscalingv1alpha1.PodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: rev.Namespace, Name: name, UID: types.UID(name + "-uid"), Generation: 1,
			Labels: map[string]string{"serving.knative.dev/revision": name,
				"serving.knative.dev/service": "svc", "serving.knative.dev/configuration": "cfg"},
			Annotations: map[string]string{asconfig.ClassAnnotationKey: asconfig.KPA},
		},
		Spec: autoscalingv1alpha1.PodAutoscalerSpec{
			ScaleTargetRef: corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name + "-deployment"},
			ProtocolType:   "http1",
		},
	}
	pa.Status.InitializeConditions()
	return pa
}

// start runs the process with config-leader-election data le and one
// KPA-class PA (rev) with its Deployment.
func start(t *testing.T, le map[string]string) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	replicas := int32(1)
	h := &harness{
		kube: fakekube.NewSimpleClientset(
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: rev.Namespace, Name: "rev-deployment"},
				Spec: appsv1.DeploymentSpec{Replicas: &replicas}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: bucket.ConfigMapName}, Data: le},
		),
		serving: fakeserving.NewSimpleClientset(newPA(rev.Name)),
		net:     fakenet.NewSimpleClientset(),
		scales:  &scalePatches{},
		cancel:  cancel,
		done:    make(chan error, 1),
	}
	h.kube.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if f := h.leaseUpdate.Load(); f != nil {
			if err := (*f)(a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)); err != nil {
				return true, nil, err
			}
		}
		return false, nil, nil
	})
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	dyn.PrependReactor("patch", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		if p.GetSubresource() != "scale" {
			return false, nil, nil
		}
		h.scales.mu.Lock()
		h.scales.patches = append(h.scales.patches, p.GetName()+" "+string(p.GetPatch()))
		h.scales.mu.Unlock()
		return true, nil, nil
	})
	h.dyn = dyn
	cfg := Config{StatsAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Namespace: sysNS,
		PodName: podNam, PodIP: podIP, LoggingName: "config-logging", ObservabilityName: "config-observability",
		ShutdownTimeout: 5 * time.Second}
	d := Deps{Kube: h.kube, Serving: h.serving, Networking: h.net, Dynamic: dyn, Prober: okProber{}}
	ready := make(chan [2]string, 1)
	go func() { h.done <- Run(ctx, cfg, d, ready, zaptest.NewLogger(t).Sugar(), zap.NewAtomicLevel()) }()
	t.Cleanup(func() { _ = h.stop(t) })
	select {
	case h.addrs = <-ready:
	case err := <-h.done:
		h.done <- err
		t.Fatalf("run ended early: %v", err)
	}
	return h
}

// holder is the Lease's holder identity ("" when free or absent).
func (h *harness) holder(t *testing.T) string {
	l, err := h.kube.CoordinationV1().Leases(sysNS).Get(context.Background(), bucket.Name(0, 1), metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// sksFor waits for the SKS of PA name and gives it the services the
// controller (absent here) would.
func (h *harness) sksFor(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	skss := h.net.NetworkingV1alpha1().ServerlessServices(rev.Namespace)
	eventually(t, "SKS "+name, func() bool {
		_, err := skss.Get(ctx, name, metav1.GetOptions{})
		return err == nil
	})
	sks, err := skss.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sks.Status.ServiceName = name
	sks.Status.PrivateServiceName = name + "-private"
	sks.Status.MarkEndpointsReady()
	if _, err := skss.UpdateStatus(ctx, sks, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestWiring runs the whole process against fake API clients: it takes the
// Lease, a KPA-class PA gets its SKS and Metric, a stat sent over the
// websocket reaches the decider and shows as the PA's desiredScale, the
// Deployment is scaled with an event, and SIGTERM-style shutdown releases
// the Lease and closes the socket with 1012.
func TestWiring(t *testing.T) {
	ctx := context.Background()
	// Short terms, as a lab would set them; the ConfigMap is honoured.
	h := start(t, map[string]string{"lease-duration": "15s", "renew-deadline": "10s", "retry-period": "2s"})
	kube, serving, sp, addrs := h.kube, h.serving, h.scales, h.addrs

	// The Lease is taken under upstream's name and identity, with the
	// ConfigMap's duration.
	eventually(t, "Lease", func() bool {
		l, err := kube.CoordinationV1().Leases(sysNS).Get(ctx, bucket.Name(0, 1), metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == podNam+"_"+podIP &&
			l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds == 15
	})

	// The KPA reconciler creates the SKS; the controller (absent here)
	// would give it a private service, which brings the Metric.
	h.sksFor(t, ctx, rev.Name)
	eventually(t, "Metric", func() bool {
		m, err := serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && m.Spec.ScrapeTarget == rev.Name+"-private"
	})
	// The Metric reconciler made the collection once it wrote the status.
	eventually(t, "Metric status", func() bool {
		m, err := serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && m.Status.GetCondition("Ready") != nil
	})

	// An activator stat: 250 concurrent requests against the default
	// target of 100 (70% utilisation) wants 4 pods.
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addrs[0]+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	{
		frame := wire.MarshalMessages([]wire.StatMessage{{Key: rev,
			Stat: wire.Stat{PodName: "activator-x", AverageConcurrentRequests: 250, RequestCount: 250}}})
		if err := conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			t.Fatal(err)
		}
	}
	var got *autoscalingv1alpha1.PodAutoscaler
	eventually(t, "desiredScale from the stat", func() bool {
		got, err = serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && got.Status.DesiredScale != nil && *got.Status.DesiredScale == 4
	})
	if got.Status.ServiceName != rev.Name || got.Status.MetricsServiceName != rev.Name+"-private" {
		t.Errorf("status service names = %q, %q", got.Status.ServiceName, got.Status.MetricsServiceName)
	}
	eventually(t, "scale patch to 4", func() bool {
		for _, p := range sp.list() {
			if p == `rev-deployment [{"op":"add","path":"/spec/replicas","value":4}]` {
				return true
			}
		}
		return false
	})
	eventually(t, "ScaleTargetScaled event", func() bool {
		evs, err := kube.CoreV1().Events(rev.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == "ScaleTargetScaled" && e.InvolvedObject.Name == rev.Name {
				return true
			}
		}
		return false
	})
	// config-autoscaler is live: a max-scale of 2 caps the PA at once.
	if _, err := kube.CoreV1().ConfigMaps(sysNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: asconfig.ConfigName},
		Data:       map[string]string{asconfig.KeyMaxScale: "2"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "desiredScale capped by the new max-scale", func() bool {
		got, err = serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && got.Status.DesiredScale != nil && *got.Status.DesiredScale == 2
	})
	body := scrape(t, "http://"+addrs[1]+"/metrics")
	for _, want := range []string{"kn_revision_pods_requested", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The cold-start ring is served beside the metrics (empty: this PA
	// never was at zero).
	if body := scrape(t, "http://"+addrs[1]+"/debug/coldstarts"); body != "[]" {
		t.Errorf("/debug/coldstarts = %q, want []", body)
	}

	if err := h.stop(t); err != nil {
		t.Errorf("run = %v", err)
	}
	// The stat server said goodbye with 1012.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, 1012) {
				t.Errorf("read after shutdown = %v, want close 1012", err)
			}
			break
		}
	}
	// The Lease was released for the next replica.
	l, err := kube.CoordinationV1().Leases(sysNS).Get(context.Background(), bucket.Name(0, 1), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("Lease still held by %q after shutdown", *h)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCheckIdentity(t *testing.T) {
	for _, tc := range []struct {
		name, pod, ip string
		wantErr       bool
		loopback      bool
	}{
		{"routable", "as-0", "10.1.2.3", false, false},
		{"ipv6", "as-0", "fd00::1", false, false},
		{"no pod name", "", "10.1.2.3", true, false},
		{"no IP", "as-0", "", true, false},
		{"garbage", "as-0", "ten", true, false},
		{"loopback v4", "as-0", "127.0.0.1", true, true},
		{"loopback v6", "as-0", "::1", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckIdentity(tc.pod, tc.ip)
			if (err != nil) != tc.wantErr {
				t.Fatalf("CheckIdentity = %v, want error %v", err, tc.wantErr)
			}
			if errors.Is(err, bucket.ErrLoopbackIP) != tc.loopback {
				t.Errorf("CheckIdentity = %v, loopback error %v", err, tc.loopback)
			}
		})
	}
}

func TestNetConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]string
		want    netConfig
		wantErr bool
	}{
		{"defaults", nil, netConfig{MeshMode: "auto"}, false},
		{"enabled", map[string]string{"mesh-compatibility-mode": "Enabled"}, netConfig{MeshMode: "enabled"}, false},
		{"disabled passthrough", map[string]string{"mesh-compatibility-mode": "disabled",
			"enable-mesh-pod-addressability": "true"}, netConfig{MeshMode: "disabled", Passthrough: true}, false},
		{"bad mode", map[string]string{"mesh-compatibility-mode": "sometimes"}, netConfig{}, true},
		{"bad bool", map[string]string{"enable-mesh-pod-addressability": "yes please"}, netConfig{}, true},
		{"other keys ignored", map[string]string{"ingress-class": "x"}, netConfig{MeshMode: "auto"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := newNetConfigFromMap(tc.data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && *got != tc.want {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

// TestLeaseLost: when another replica takes the bucket's Lease, this one
// stops reconciling its PAs; once the Lease is free again it takes the
// bucket back without a restart, and its reconcilers pick up a PA created
// meanwhile.
func TestLeaseLost(t *testing.T) {
	ctx := context.Background()
	h := start(t, map[string]string{"lease-duration": "2s", "renew-deadline": "1s", "retry-period": "200ms"})
	self := podNam + "_" + podIP
	eventually(t, "Lease taken", func() bool { return h.holder(t) == self })
	h.sksFor(t, ctx, rev.Name)

	// Another replica takes the Lease (and then never renews it). The fake
	// clientset does not check resource versions, so the conflict a real
	// API server gives our stale renewals is injected until we lost.
	var stolen atomic.Bool
	stolen.Store(true)
	conflict := func(l *coordinationv1.Lease) error {
		if stolen.Load() && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == self {
			return apierrors.NewConflict(coordinationv1.Resource("leases"), l.Name, errors.New("stale"))
		}
		return nil
	}
	h.leaseUpdate.Store(&conflict)
	leases := h.kube.CoordinationV1().Leases(sysNS)
	l, err := leases.Get(ctx, bucket.Name(0, 1), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := "autoscaler-1_192.0.2.11"
	now := metav1.NewMicroTime(time.Now())
	l.Spec.HolderIdentity, l.Spec.AcquireTime, l.Spec.RenewTime = &other, &now, &now
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	eventually(t, "the bucket given up", func() bool {
		return strings.Contains(scrape(t, "http://"+h.addrs[1]+"/metrics"), "thaw_autoscaler_buckets_held 0\n")
	})

	// A PA created while another replica leads is picked up when this one leads
	// again. (Created before the new term lists: the fake clientset's watches can
	// miss objects created between an informer's list and its watch.)
	if _, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Create(ctx, newPA("rev2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stolen.Store(false)
	// The other replica's Lease expires; this one leads again, with working
	// reconcilers.
	eventually(t, "Lease taken back", func() bool { return h.holder(t) == self })
	h.sksFor(t, ctx, "rev2")
	eventually(t, "Metric of rev2", func() bool {
		_, err := h.serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, "rev2", metav1.GetOptions{})
		return err == nil
	})
	if err := h.stop(t); err != nil {
		t.Errorf("run = %v", err)
	}
}
