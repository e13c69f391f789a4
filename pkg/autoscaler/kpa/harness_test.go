package kpa

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	fakekube "k8s.io/client-go/kubernetes/fake"
	clientgotesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/kmeta"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	fakenet "knative.dev/networking/pkg/client/clientset/versioned/fake"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	fakeserving "knative.dev/serving/pkg/client/clientset/versioned/fake"
	servinginformers "knative.dev/serving/pkg/client/informers/externalversions"

	"github.com/thaw-dev/thaw/pkg/asconfig"
	"github.com/thaw-dev/thaw/pkg/autoscaler/decider"
	"github.com/thaw-dev/thaw/pkg/autoscaler/multiscaler"
	"github.com/thaw-dev/thaw/pkg/coldstart"
)

var (
	t0  = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	key = types.NamespacedName{Namespace: "ns", Name: "rev"}
)

type fakeDeciders struct {
	mu     sync.Mutex
	status map[types.NamespacedName]multiscaler.Status
	spec   map[types.NamespacedName]decider.Spec
	// next is the status a Create starts with.
	next multiscaler.Status
}

func newFakeDeciders() *fakeDeciders {
	return &fakeDeciders{status: map[types.NamespacedName]multiscaler.Status{},
		spec: map[types.NamespacedName]decider.Spec{}, next: multiscaler.Status{DesiredScale: -1}}
}

func (f *fakeDeciders) Create(k types.NamespacedName, s decider.Spec, _ multiscaler.Labels) multiscaler.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.status[k]; ok {
		return st
	}
	f.status[k], f.spec[k] = f.next, s
	return f.next
}

func (f *fakeDeciders) Update(k types.NamespacedName, s decider.Spec) (multiscaler.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.status[k]
	if !ok {
		return st, multiscaler.ErrNotFound
	}
	f.spec[k] = s
	return st, nil
}

func (f *fakeDeciders) Get(k types.NamespacedName) (multiscaler.Status, decider.Spec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.status[k]
	if !ok {
		return st, decider.Spec{}, multiscaler.ErrNotFound
	}
	return st, f.spec[k], nil
}

func (f *fakeDeciders) Delete(k types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.status, k)
	delete(f.spec, k)
}

func (f *fakeDeciders) set(k types.NamespacedName, st multiscaler.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = st
	if _, ok := f.status[k]; ok {
		f.status[k] = st
	}
}

type fakeScales struct {
	mu       sync.Mutex
	replicas *int32
	patches  []int32
	err      error
}

func (f *fakeScales) Replicas(string, corev1.ObjectReference) (*int32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replicas, f.err
}

func (f *fakeScales) SetReplicas(_ context.Context, _ string, _ corev1.ObjectReference, n int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.patches = append(f.patches, n)
	f.replicas = &n
	return nil
}

type fakeProber struct {
	mu   sync.Mutex
	ok   bool
	urls []string
}

func (f *fakeProber) Probe(_ context.Context, url string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.urls = append(f.urls, url)
	if !f.ok {
		return false, errors.New("not the activator")
	}
	return true, nil
}

type requeue struct {
	key types.NamespacedName
	d   time.Duration
}

type harness struct {
	t        *testing.T
	r        *Reconciler
	serving  *fakeserving.Clientset
	net      *fakenet.Clientset
	sf       servinginformers.SharedInformerFactory
	nf       netinformers.SharedInformerFactory
	pods     *fakekube.Clientset
	podInf   kubeinformers.SharedInformerFactory
	deciders *fakeDeciders
	scales   *fakeScales
	prober   *fakeProber
	clock    *clocktesting.FakeClock
	rec      *record.FakeRecorder
	cfg      *asconfig.Config
	dcfg     *asconfig.DeploymentConfig
	after    []requeue
	cold     *coldstart.Recorder
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{
		t:        t,
		serving:  fakeserving.NewSimpleClientset(),
		net:      fakenet.NewSimpleClientset(),
		pods:     fakekube.NewSimpleClientset(),
		deciders: newFakeDeciders(),
		scales:   &fakeScales{},
		prober:   &fakeProber{ok: true},
		clock:    clocktesting.NewFakeClock(t0),
		rec:      record.NewFakeRecorder(100),
		cfg:      asconfig.DefaultConfig(),
		dcfg:     &asconfig.DeploymentConfig{ProgressDeadline: asconfig.DefaultProgressDeadline},
		cold:     coldstart.NewRecorder(coldstart.RecorderOptions{}),
	}
	h.sf = servinginformers.NewSharedInformerFactory(h.serving, 0)
	h.nf = netinformers.NewSharedInformerFactory(h.net, 0)
	h.podInf = kubeinformers.NewSharedInformerFactory(h.pods, 0)
	r, err := New(Deps{
		ServingClient:    h.serving,
		NetworkingClient: h.net,
		PodAutoscalers:   h.sf.Autoscaling().V1alpha1().PodAutoscalers(),
		Metrics:          h.sf.Autoscaling().V1alpha1().Metrics(),
		SKSs:             h.nf.Networking().V1alpha1().ServerlessServices(),
		Pods:             h.podInf.Core().V1().Pods().Informer(),
		Scales:           h.scales,
		Deciders:         h.deciders,
		Config:           func() *asconfig.Config { return h.cfg },
		DeploymentConfig: func() *asconfig.DeploymentConfig { return h.dcfg },
		Prober:           h.prober,
		Recorder:         h.rec,
		Clock:            h.clock,
		Logger:           zaptest.NewLogger(t).Sugar(),
		ColdStarts:       h.cold,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.after = func(k types.NamespacedName, d time.Duration) { h.after = append(h.after, requeue{k, d}) }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		r.probes.wait()
	})
	r.probes.start(ctx)
	h.r = r
	return h
}

type paOpt func(*autoscalingv1alpha1.PodAutoscaler)

func newPA(opts ...paOpt) *autoscalingv1alpha1.PodAutoscaler {
	pa := &autoscalingv1alpha1.PodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name, UID: "pa-uid", Generation: 1,
			Labels: map[string]string{revisionLabel: key.Name, serviceLabel: "svc", configurationLabel: "cfg"},
			Annotations: map[string]string{asconfig.ClassAnnotationKey: asconfig.KPA,
				asconfig.MetricAnnotationKey: asconfig.MetricConcurrency},
		},
		Spec: autoscalingv1alpha1.PodAutoscalerSpec{
			ScaleTargetRef: corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: key.Name + "-deployment"},
			ProtocolType:   "http1",
		},
	}
	pa.Status.InitializeConditions()
	for _, o := range opts {
		o(pa)
	}
	return pa
}

func withAnn(k, v string) paOpt {
	return func(pa *autoscalingv1alpha1.PodAutoscaler) { pa.Annotations[k] = v }
}

func withCC(cc int64) paOpt {
	return func(pa *autoscalingv1alpha1.PodAutoscaler) { pa.Spec.ContainerConcurrency = cc }
}

func unreachable(pa *autoscalingv1alpha1.PodAutoscaler) {
	pa.Spec.Reachability = autoscalingv1alpha1.ReachabilityUnreachable
}

// setActive sets the Active condition to status with a transition `ago`
// before t0 (and ScaleTargetInitialized, the service name as a running PA
// has them).
func setActive(status corev1.ConditionStatus, reason string, ago time.Duration) paOpt {
	return func(pa *autoscalingv1alpha1.PodAutoscaler) {
		switch status {
		case corev1.ConditionTrue:
			pa.Status.MarkActive()
		case corev1.ConditionFalse:
			pa.Status.MarkInactive(reason, "The target is not receiving traffic.")
		default:
			pa.Status.MarkActivating(reason, "Requests to the target are being buffered as resources are provisioned.")
		}
		pa.Status.MarkScaleTargetInitialized()
		pa.Status.MarkSKSReady()
		pa.Status.ServiceName = key.Name
		pa.Status.MetricsServiceName = key.Name + "-private"
		for i := range pa.Status.Conditions {
			pa.Status.Conditions[i].LastTransitionTime = apis.VolatileTime{Inner: metav1.NewTime(t0.Add(-ago))}
		}
	}
}

func notInitialized(pa *autoscalingv1alpha1.PodAutoscaler) {
	for i, c := range pa.Status.Conditions {
		if c.Type == autoscalingv1alpha1.PodAutoscalerConditionScaleTargetInitialized {
			pa.Status.Conditions[i].Status = corev1.ConditionUnknown
		}
	}
}

func withDesired(n int32) paOpt {
	return func(pa *autoscalingv1alpha1.PodAutoscaler) { pa.Status.DesiredScale = &n }
}

// sks returns a ready SKS of pa in mode; proxyAgo > 0 marks the activator
// in the path since then.
func makeSKS(pa *autoscalingv1alpha1.PodAutoscaler, mode nv1alpha1.ServerlessServiceOperationMode, num int32,
	proxyAgo time.Duration) *nv1alpha1.ServerlessService {
	s := MakeSKS(pa, mode, num)
	s.Status.ServiceName = key.Name
	s.Status.PrivateServiceName = key.Name + "-private"
	s.Status.MarkEndpointsReady()
	if proxyAgo > 0 {
		s.Status.MarkActivatorEndpointsPopulated()
		for i := range s.Status.Conditions {
			if s.Status.Conditions[i].Type == nv1alpha1.ActivatorEndpointsPopulated {
				s.Status.Conditions[i].LastTransitionTime = apis.VolatileTime{Inner: metav1.NewTime(t0.Add(-proxyAgo))}
			}
		}
	} else {
		s.Status.MarkActivatorEndpointsRemoved()
	}
	return s
}

func (h *harness) addPA(pa *autoscalingv1alpha1.PodAutoscaler) {
	h.t.Helper()
	if err := h.sf.Autoscaling().V1alpha1().PodAutoscalers().Informer().GetIndexer().Add(pa); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(pa.Namespace).Create(context.Background(), pa,
		metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) addSKS(s *nv1alpha1.ServerlessService) {
	h.t.Helper()
	if err := h.nf.Networking().V1alpha1().ServerlessServices().Informer().GetIndexer().Add(s); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.net.NetworkingV1alpha1().ServerlessServices(s.Namespace).Create(context.Background(), s,
		metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) addMetric(pa *autoscalingv1alpha1.PodAutoscaler) {
	h.t.Helper()
	s := Resolve(h.cfg, h.dcfg, pa)
	m := MakeMetric(pa, &s, scrapeTarget(&s, key.Name+"-private"))
	if err := h.sf.Autoscaling().V1alpha1().Metrics().Informer().GetIndexer().Add(m); err != nil {
		h.t.Fatal(err)
	}
}

// addPods adds n pods of the revision in phase, ready or not.
func (h *harness) addPods(n int, phase corev1.PodPhase, ready bool, prefix string) {
	h.t.Helper()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: prefix + string(rune('a'+i)),
				Labels: map[string]string{revisionLabel: key.Name}},
			Status: corev1.PodStatus{Phase: phase,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
		}
		if err := h.podInf.Core().V1().Pods().Informer().GetIndexer().Add(p); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) reconcile() error {
	h.t.Helper()
	h.serving.ClearActions()
	h.net.ClearActions()
	return h.r.Reconcile(context.Background(), key)
}

// status returns the last status written, or nil.
func (h *harness) status() *autoscalingv1alpha1.PodAutoscaler {
	var out *autoscalingv1alpha1.PodAutoscaler
	for _, a := range h.serving.Actions() {
		if u, ok := a.(clientgotesting.UpdateAction); ok && a.GetSubresource() == "status" {
			out = u.GetObject().(*autoscalingv1alpha1.PodAutoscaler)
		}
	}
	return out
}

// sksWritten returns the SKS created or updated, or nil.
func (h *harness) sksWritten() *nv1alpha1.ServerlessService {
	var out *nv1alpha1.ServerlessService
	for _, a := range h.net.Actions() {
		switch a := a.(type) {
		case clientgotesting.CreateAction:
			out = a.GetObject().(*nv1alpha1.ServerlessService)
		case clientgotesting.UpdateAction:
			out = a.GetObject().(*nv1alpha1.ServerlessService)
		}
	}
	return out
}

func (h *harness) metricWritten() *autoscalingv1alpha1.Metric {
	var out *autoscalingv1alpha1.Metric
	for _, a := range h.serving.Actions() {
		if a.GetResource().Resource != "metrics" {
			continue
		}
		switch a := a.(type) {
		case clientgotesting.CreateAction:
			out = a.GetObject().(*autoscalingv1alpha1.Metric)
		case clientgotesting.UpdateAction:
			out = a.GetObject().(*autoscalingv1alpha1.Metric)
		}
	}
	return out
}

func cond(pa *autoscalingv1alpha1.PodAutoscaler, t apis.ConditionType) (corev1.ConditionStatus, string) {
	c := pa.Status.GetCondition(t)
	if c == nil {
		return "", ""
	}
	return c.Status, c.Reason
}

var _ = kmeta.NewControllerRef
