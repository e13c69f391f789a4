package kpa

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	appslisters "k8s.io/client-go/listers/apps/v1"

	nv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"

	"github.com/thaw-dev/thaw/pkg/asconfig"
)

// ScaleClient reads and sets the replicas of a PA's scale target.
type ScaleClient interface {
	// Replicas returns the target's spec.replicas (nil when unset).
	Replicas(namespace string, ref corev1.ObjectReference) (*int32, error)
	// SetReplicas patches the target's scale subresource.
	SetReplicas(ctx context.Context, namespace string, ref corev1.ObjectReference, n int32) error
}

// DeploymentScales reads Deployments from a lister and patches their scale
// subresource through the dynamic client, with the JSON patch upstream
// sends.
type DeploymentScales struct {
	Dynamic     dynamic.Interface
	Deployments appslisters.DeploymentLister
}

var _ ScaleClient = DeploymentScales{}

func gvr(ref corev1.ObjectReference) (schema.GroupVersionResource, error) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return schema.GroupVersionResource{}, err
	}
	plural, _ := meta.UnsafeGuessKindToResource(gv.WithKind(ref.Kind))
	return plural, nil
}

// Replicas implements ScaleClient.
func (d DeploymentScales) Replicas(namespace string, ref corev1.ObjectReference) (*int32, error) {
	if ref.Kind != "Deployment" {
		return nil, fmt.Errorf("unsupported scale target kind %q", ref.Kind)
	}
	dep, err := d.Deployments.Deployments(namespace).Get(ref.Name)
	if err != nil {
		return nil, err
	}
	return dep.Spec.Replicas, nil
}

// SetReplicas implements ScaleClient.
func (d DeploymentScales) SetReplicas(ctx context.Context, namespace string, ref corev1.ObjectReference, n int32) error {
	res, err := gvr(ref)
	if err != nil {
		return err
	}
	patch := fmt.Sprintf(`[{"op":"add","path":"/spec/replicas","value":%d}]`, n)
	_, err = d.Dynamic.Resource(res).Namespace(namespace).Patch(ctx, ref.Name, types.JSONPatchType, []byte(patch),
		metav1.PatchOptions{}, "scale")
	return err
}

// scale brings the scale target to what the decider wants within the
// bounds, and returns the wanted scale (−1: unknown).
func (r *Reconciler) scale(ctx context.Context, pa *autoscalingv1alpha1.PodAutoscaler, sks *nv1alpha1.ServerlessService,
	s *Settings, desired int32, cfg *asconfig.Config, logger *zap.SugaredLogger) (int32, error) {
	if desired < 0 && !pa.Status.IsActivating() {
		if !r.keepAliveAtZero(pa) {
			return desired, nil // no metrics yet
		}
		// A restarted autoscaler has no metrics of a revision at zero
		// until its next request; the keep-alive policy may pre-warm it
		// before, and a 0 keeps it where it is otherwise.
		desired = 0
	}
	lo, hi := s.MinScale, s.MaxScale
	// Until the initial scale is reached, it is a lower bound (unless the
	// revision is unreachable, which may go to zero at once).
	if s.InitialScale > 1 && !pa.Status.IsScaleTargetInitialized() &&
		pa.Spec.Reachability != autoscalingv1alpha1.ReachabilityUnreachable {
		lo = max(lo, s.InitialScale)
	}
	desired = applyBounds(lo, hi, desired)
	key := types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name}
	if desired == 0 {
		r.pacing.withdraw(key) // a paced wake-up no longer wanted
	}

	desired, apply := r.handleScaleToZero(ctx, pa, sks, s, desired, cfg, logger)
	if !apply {
		return desired, nil
	}
	cur, err := r.d.Scales.Replicas(pa.Namespace, pa.Spec.ScaleTargetRef)
	if err != nil {
		return desired, fmt.Errorf("getting scale target %s: %w", pa.Spec.ScaleTargetRef.Name, err)
	}
	current := int32(1)
	if cur != nil {
		current = *cur
	}
	if desired == current {
		return desired, nil
	}
	if current == 0 && desired > 0 && !r.pacing.admit(key, desired) {
		// It waits in the pacer, which hands it to the wake path.
		logger.Debugw("Scale from zero paced", "to", desired)
		return desired, nil
	}
	logger.Infow("Scaling", "from", current, "to", desired)
	if err := r.d.Scales.SetReplicas(ctx, pa.Namespace, pa.Spec.ScaleTargetRef, desired); err != nil {
		return desired, fmt.Errorf("scaling %s to %d: %w", pa.Spec.ScaleTargetRef.Name, desired, err)
	}
	if current == 0 && desired > 0 && r.d.ColdStarts != nil {
		r.d.ColdStarts.ScaleWritten(key, r.d.Clock.Now(), desired)
	}
	r.d.Recorder.Eventf(pa, corev1.EventTypeNormal, "ScaleTargetScaled", "Scaled %s from %d to %d",
		pa.Spec.ScaleTargetRef.Name, current, desired)
	return desired, nil
}

// handleScaleToZero decides whether a wanted 0 may be applied now: only
// after the PA was active for a stable window (then it turns Inactive and
// the activator goes into the path), the activator is proven in the path,
// and the grace and retention periods passed. It returns the scale and
// whether to apply it.
func (r *Reconciler) handleScaleToZero(ctx context.Context, pa *autoscalingv1alpha1.PodAutoscaler,
	sks *nv1alpha1.ServerlessService, s *Settings, desired int32, cfg *asconfig.Config,
	logger *zap.SugaredLogger) (int32, bool) {
	if desired != 0 {
		return desired, true
	}
	if !cfg.EnableScaleToZero {
		return 1, true
	}
	key := types.NamespacedName{Namespace: pa.Namespace, Name: pa.Name}
	now := r.d.Clock.Now()
	switch {
	case pa.Status.IsActivating():
		if pa.Status.CanFailActivation(now, s.ActivationTimeout) {
			logger.Infow("Activation timed out", "timeout", s.ActivationTimeout)
			return desired, true
		}
		r.EnqueueAfter(key, s.ActivationTimeout)
		return scaleUnknown, false
	case pa.Status.IsActive():
		af := pa.Status.ActiveFor(now)
		if af >= s.StableWindow {
			if sks.Spec.Mode == nv1alpha1.SKSOperationModeProxy {
				// The SKS will not change, so nothing else re-triggers us.
				r.EnqueueAfter(key, proxyRecheck)
			}
			logger.Infow("Deactivating", "activeFor", af)
			return desired, false
		}
		// Keep one pod for the rest of the window.
		r.EnqueueAfter(key, s.StableWindow-af)
		return 1, true
	}

	// Inactive.
	if s.TBC != -1 {
		// With TBC −1 the activator is always in the path; otherwise prove it.
		if pa.Status.ServiceName == "" {
			// Nothing to probe yet; the SKS status will bring the name.
			r.EnqueueAfter(key, probedRecheck)
			return desired, false
		}
		ok, err := r.d.Prober.Probe(ctx, r.probeURL(pa))
		if !ok {
			logger.Infow("Activator not yet in the path; probing", zap.Error(err))
			r.probes.offer(key, r.probeURL(pa))
			return desired, false
		}
	}
	lastPod := s.Retention
	if on, d, apply, done := r.keepAliveInactive(pa, key, now, logger); done {
		return d, apply
	} else if on {
		// The policy let the pod go: only the grace period is left.
		lastPod = 0
	}
	inactive := pa.Status.InactiveFor(now)
	if inactive >= max(cfg.ScaleToZeroGracePeriod, lastPod) {
		return desired, true
	}
	if lastPod > 0 && inactive < lastPod {
		r.EnqueueAfter(key, lastPod-inactive)
		return desired, false
	}
	if to := cfg.ScaleToZeroGracePeriod - proxyFor(sks, now); to > 0 {
		r.EnqueueAfter(key, to)
		return desired, false
	}
	return desired, true
}

// proxyFor is how long the activator has been in the SKS's path.
func proxyFor(sks *nv1alpha1.ServerlessService, now time.Time) time.Duration {
	c := sks.Status.GetCondition(nv1alpha1.ActivatorEndpointsPopulated)
	if c == nil || c.Status != corev1.ConditionTrue {
		return 0
	}
	return now.Sub(c.LastTransitionTime.Inner.Time)
}
