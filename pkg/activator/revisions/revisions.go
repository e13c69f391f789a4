// Package revisions gives the activator what it needs to know about a Revision: identity, concurrency,
// timeouts and protocol, read from a Revision informer and kept as small immutable Info values.
package revisions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"knative.dev/pkg/apis"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/client/clientset/versioned"
	servinginformers "knative.dev/serving/pkg/client/informers/externalversions/serving/v1"
)

// Upstream defaults applied when a Revision leaves a timeout unset (serving pkg/apis/config/defaults.go).
const (
	DefaultTimeout              = 300 * time.Second
	DefaultResponseStartTimeout = 300 * time.Second
	DefaultIdleTimeout          = time.Duration(0)
)

// FullDuplexAnnotation enables full-duplex HTTP/1 for a revision when set to "Enabled".
const FullDuplexAnnotation = "features.knative.dev/http-full-duplex"

// ErrNotFound is returned (wrapped) when a revision is not known to the informer.
var ErrNotFound = errors.New("revision not found")

// Info is what the activator needs from a Revision. Values are shared between readers: never modify one.
type Info struct {
	ID                   types.NamespacedName
	UID                  types.UID
	ContainerConcurrency int
	Timeout              time.Duration
	ResponseStartTimeout time.Duration
	IdleTimeout          time.Duration
	// H2C is true when containers[0].ports[0].name is "h2c": pods are then reached on the "http2" port.
	H2C        bool
	FullDuplex bool
	// ProbeOptimisation lets a pod be routed as soon as its queue-proxy probe passes, before Kubernetes
	// marks it Ready. It is off when readiness depends on something queue-proxy cannot see (exec
	// readiness probes, startup probes).
	ProbeOptimisation bool
	Service           string
	Configuration     string
	// CannotStart, when not empty, is why the revision's pods cannot become ready ("Reason: message" of
	// its failing condition): Ready is False because ResourcesAvailable (image pull errors,
	// unschedulable pods, a progress deadline) or ContainerHealthy (a crashing container) is False; or
	// Active is not True with a pod-level reason (see podReasons).
	CannotStart string

	// life is shared by the Infos of one revision from its creation to its deletion (updates replace the
	// Info, not the life), so that a request holding an older Info still sees the deletion.
	life *life
}

// life ends when the Store sees its revision deleted, before the delete handlers run.
type life struct {
	mu   sync.RWMutex
	gone bool
}

// Hold reports whether the revision is still live and, if so, keeps the Store's delete handlers from
// running until Release. Per-revision state created while held (throttler entries, metric series) is
// then either created before the handlers drop it, or not at all: a request that looked the revision
// up just before its deletion cannot bring that state back for good. An Info not made by a Store is
// always live. Hold only briefly, never across a wait.
func (i *Info) Hold() bool {
	if i.life == nil {
		return true
	}
	i.life.mu.RLock()
	if i.life.gone {
		i.life.mu.RUnlock()
		return false
	}
	return true
}

// Release ends a successful Hold.
func (i *Info) Release() {
	if i.life != nil {
		i.life.mu.RUnlock()
	}
}

// PortName is the name of the Endpoints/Service port that carries this revision's traffic.
func (i *Info) PortName() string {
	if i.H2C {
		return "http2"
	}
	return "http"
}

// FromRevision converts a Revision. It never fails: unset fields take upstream's defaults.
func FromRevision(rev *servingv1.Revision) *Info {
	info := &Info{
		ID:                   types.NamespacedName{Namespace: rev.Namespace, Name: rev.Name},
		UID:                  rev.UID,
		Timeout:              seconds(rev.Spec.TimeoutSeconds, DefaultTimeout),
		ResponseStartTimeout: seconds(rev.Spec.ResponseStartTimeoutSeconds, DefaultResponseStartTimeout),
		IdleTimeout:          seconds(rev.Spec.IdleTimeoutSeconds, DefaultIdleTimeout),
		FullDuplex:           rev.Annotations[FullDuplexAnnotation] == "Enabled",
		ProbeOptimisation:    probeOptimisation(&rev.Spec),
		Service:              rev.Labels[serving.ServiceLabelKey],
		Configuration:        rev.Labels[serving.ConfigurationLabelKey],
	}
	info.CannotStart = cannotStart(rev)
	if cc := rev.Spec.ContainerConcurrency; cc != nil && *cc > 0 {
		info.ContainerConcurrency = int(*cc)
	}
	if len(rev.Spec.Containers) > 0 {
		if ports := rev.Spec.Containers[0].Ports; len(ports) > 0 && ports[0].Name == "h2c" {
			info.H2C = true
		}
	}
	return info
}

// podReasons are the pod-level reasons, as the kubelet and the scheduler name them, that Thaw's
// autoscaler puts in an activating PodAutoscaler's Active condition when every live pod of the revision
// is stuck on one; upstream's revision reconciler copies it into the Revision's Active condition. The
// activator may read Revisions but neither pods nor PodAutoscalers (upstream's RBAC), so this is how it
// learns within a second that a revision at zero cannot start. Upstream's own autoscaler only says
// Queued: then only the Ready conditions below apply.
var podReasons = map[string]bool{
	"ImagePullBackOff":           true,
	"ErrImagePull":               true,
	"InvalidImageName":           true,
	"ErrImageNeverPull":          true,
	"CrashLoopBackOff":           true,
	"CreateContainerConfigError": true,
	"Unschedulable":              true,
}

// cannotStart reads the failing condition of a revision that cannot become ready, or "". Only the
// conditions set from its pods' and deployment's failures count: a revision merely scaled to zero
// (Active False, NoTraffic) or still starting (Unknown, Queued or Deploying) can start.
func cannotStart(rev *servingv1.Revision) string {
	if c := rev.Status.GetCondition(servingv1.RevisionConditionActive); c != nil && !c.IsTrue() && podReasons[c.Reason] {
		return reasonMessage(c)
	}
	if ready := rev.Status.GetCondition(servingv1.RevisionConditionReady); ready == nil || !ready.IsFalse() {
		return ""
	}
	for _, t := range []apis.ConditionType{servingv1.RevisionConditionResourcesAvailable, servingv1.RevisionConditionContainerHealthy} {
		if c := rev.Status.GetCondition(t); c != nil && c.IsFalse() && !killedFromOutside[c.Reason] {
			return reasonMessage(c)
		}
	}
	return ""
}

// killedFromOutside are ContainerHealthy reasons of a container ended by a signal (SIGKILL: a kill, an
// eviction, the OOM killer; SIGTERM). Upstream's reconciler keeps the reason after the revision scales
// to zero, until a pod is ready again, so one killed pod would make every later cold request fail fast
// although the next pod starts fine. A revision whose pods keep dying shows CrashLoopBackOff in Active.
var killedFromOutside = map[string]bool{"ExitCode137": true, "ExitCode143": true}

func reasonMessage(c *apis.Condition) string {
	if c.Message == "" {
		return c.Reason
	}
	return c.Reason + ": " + c.Message
}

func seconds(v *int64, def time.Duration) time.Duration {
	if v == nil || *v < 0 {
		return def
	}
	return time.Duration(*v) * time.Second
}

// userContainer is the container that serves traffic: the only one, or the one with ports.
func userContainer(spec *servingv1.RevisionSpec) (*corev1.Container, []*corev1.Container) {
	if len(spec.Containers) == 1 {
		return &spec.Containers[0], nil
	}
	var user *corev1.Container
	var sidecars []*corev1.Container
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if user == nil && len(c.Ports) > 0 {
			user = c
			continue
		}
		sidecars = append(sidecars, c)
	}
	return user, sidecars
}

func probeOptimisation(spec *servingv1.RevisionSpec) bool {
	user, sidecars := userContainer(spec)
	if user != nil {
		// queue-proxy cannot run an exec probe, and startup probes are run by the kubelet only.
		if rp := user.ReadinessProbe; rp != nil && rp.Exec != nil {
			return false
		}
		if user.StartupProbe != nil {
			return false
		}
	}
	for _, c := range sidecars {
		if c.StartupProbe != nil {
			return false
		}
	}
	return true
}

// Store keeps the Info of every Revision seen by its informer and tells subscribers about changes.
type Store struct {
	informer cache.SharedIndexInformer
	logger   *zap.SugaredLogger

	mu    sync.RWMutex
	infos map[types.NamespacedName]*Info

	hmu      sync.Mutex
	onUpsert []func(*Info)
	onDelete []func(types.NamespacedName)
}

// NewStore builds a Store over a cluster-wide Revision informer of its own (no global injection state).
func NewStore(client versioned.Interface, resync time.Duration, logger *zap.SugaredLogger) *Store {
	inf := servinginformers.NewRevisionInformer(client, corev1.NamespaceAll, resync, cache.Indexers{})
	return newStore(inf, logger)
}

func newStore(inf cache.SharedIndexInformer, logger *zap.SugaredLogger) *Store {
	s := &Store{informer: inf, logger: logger, infos: map[types.NamespacedName]*Info{}}
	// AddEventHandler only fails on a stopped informer, which cannot be the case before Run.
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.upsert,
		UpdateFunc: func(_, obj interface{}) { s.upsert(obj) },
		DeleteFunc: s.delete,
	})
	return s
}

// OnUpsert registers fn, called (from the informer's goroutine) for every added or changed Revision,
// and for each resync. Register before Run. fn must not block.
func (s *Store) OnUpsert(fn func(*Info)) {
	s.hmu.Lock()
	s.onUpsert = append(s.onUpsert, fn)
	s.hmu.Unlock()
}

// OnDelete registers fn, called when a Revision is deleted. Register before Run. fn must not block.
func (s *Store) OnDelete(fn func(types.NamespacedName)) {
	s.hmu.Lock()
	s.onDelete = append(s.onDelete, fn)
	s.hmu.Unlock()
}

// Run runs the informer until ctx ends. Use HasSynced (or WaitForSync) before serving.
func (s *Store) Run(ctx context.Context) {
	s.informer.Run(ctx.Done())
}

// WaitForSync waits until the initial list is in, or ctx ends (then it returns false).
func (s *Store) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced)
}

// HasSynced reports whether the initial list has been received.
func (s *Store) HasSynced() bool { return s.informer.HasSynced() }

// Get returns the Info of ns/name; the error wraps ErrNotFound when the revision is unknown.
func (s *Store) Get(ns, name string) (*Info, error) {
	s.mu.RLock()
	info, ok := s.infos[types.NamespacedName{Namespace: ns, Name: name}]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, ns, name)
	}
	return info, nil
}

func (s *Store) upsert(obj interface{}) {
	rev, ok := obj.(*servingv1.Revision)
	if !ok {
		s.logger.Warnf("Ignoring unexpected object %T in the revision informer", obj)
		return
	}
	info := FromRevision(rev)
	s.mu.Lock()
	if prev, ok := s.infos[info.ID]; ok && prev.life != nil {
		info.life = prev.life
	} else {
		info.life = &life{}
	}
	s.infos[info.ID] = info
	s.mu.Unlock()
	s.hmu.Lock()
	handlers := s.onUpsert
	s.hmu.Unlock()
	for _, fn := range handlers {
		fn(info)
	}
}

func (s *Store) delete(obj interface{}) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	rev, ok := obj.(*servingv1.Revision)
	if !ok {
		s.logger.Warnf("Ignoring unexpected deleted object %T in the revision informer", obj)
		return
	}
	id := types.NamespacedName{Namespace: rev.Namespace, Name: rev.Name}
	s.mu.Lock()
	prev := s.infos[id]
	delete(s.infos, id)
	s.mu.Unlock()
	if prev != nil && prev.life != nil {
		// Waits for the requests holding the revision, so none creates state after the handlers ran.
		prev.life.mu.Lock()
		prev.life.gone = true
		prev.life.mu.Unlock()
	}
	s.hmu.Lock()
	handlers := s.onDelete
	s.hmu.Unlock()
	for _, fn := range handlers {
		fn(id)
	}
}
