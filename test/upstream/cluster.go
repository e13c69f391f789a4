package upstream

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// Knative Serving's names the tier touches.
const (
	SystemNamespace = "knative-serving"
	LeaderElection  = "config-leader-election"
	// DeploymentConfig is config-deployment (queue-proxy's image and resources, among others).
	DeploymentConfig = "config-deployment"
	Autoscaler       = "autoscaler"
	Activator        = "activator"
	// RestartAnnotation on a pod template restarts a Deployment's pods, as `kubectl rollout restart`.
	RestartAnnotation = "kubectl.kubernetes.io/restartedAt"
)

// LeaseTimings are upstream CI's config-leader-election timings (test/config/ytt/ha/overlay-ha.yaml):
// shorter than the defaults so that a deleted leader is replaced quickly.
var LeaseTimings = map[string]string{"lease-duration": "15s", "renew-deadline": "10s", "retry-period": "2s"}

// BucketLease names bucket i of n as upstream's autoscaler does (autoscaler-bucket-03-of-10).
func BucketLease(i, n int) string { return fmt.Sprintf("autoscaler-bucket-%02d-of-%02d", i, n) }

// Cluster runs the tier's steps against one cluster.
type Cluster struct {
	Kube  kubernetes.Interface
	Clock clock.PassiveClock
	// Namespace is Knative Serving's (SystemNamespace when empty).
	Namespace string
	// Poll is the interval of the waits (1 s when zero).
	Poll time.Duration
	// Logf reports progress; nil is quiet.
	Logf func(format string, args ...any)
}

func (c *Cluster) ns() string {
	if c.Namespace == "" {
		return SystemNamespace
	}
	return c.Namespace
}

func (c *Cluster) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

func (c *Cluster) poll() time.Duration {
	if c.Poll == 0 {
		return time.Second
	}
	return c.Poll
}

// Saved is the part of the cluster a shape changes, to put back at the end.
type Saved struct {
	Replicas       map[string]int32 // Deployment → spec.replicas
	HPAMin, HPAMax *int32           // the activator's HorizontalPodAutoscaler, nil when it has none
	// ConfigMaps holds the data of the ConfigMaps the run writes (SavedConfigMaps).
	ConfigMaps map[string]map[string]string
}

// SavedConfigMaps are the ConfigMaps a run writes: the shape's and the queue-proxy's CPU request.
var SavedConfigMaps = []string{LeaderElection, DeploymentConfig}

// Save reads what ApplyShape will change.
func (c *Cluster) Save(ctx context.Context) (Saved, error) {
	s := Saved{Replicas: map[string]int32{}}
	for _, d := range []string{Autoscaler, Activator} {
		dep, err := c.Kube.AppsV1().Deployments(c.ns()).Get(ctx, d, metav1.GetOptions{})
		if err != nil {
			return s, err
		}
		s.Replicas[d] = ptr.Deref(dep.Spec.Replicas, 1)
	}
	hpa, err := c.Kube.AutoscalingV2().HorizontalPodAutoscalers(c.ns()).Get(ctx, Activator, metav1.GetOptions{})
	switch {
	case err == nil:
		s.HPAMin, s.HPAMax = ptr.To(ptr.Deref(hpa.Spec.MinReplicas, 1)), ptr.To(hpa.Spec.MaxReplicas)
	case !apierrors.IsNotFound(err):
		return s, err
	}
	s.ConfigMaps = map[string]map[string]string{}
	for _, name := range SavedConfigMaps {
		cm, err := c.Kube.CoreV1().ConfigMaps(c.ns()).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return s, err
		}
		data := map[string]string{}
		for k, v := range cm.Data {
			data[k] = v
		}
		s.ConfigMaps[name] = data
	}
	return s, nil
}

// setConfig replaces or merges a ConfigMap's data.
func (c *Cluster) setConfig(ctx context.Context, name string, data map[string]string, replace bool) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := c.Kube.CoreV1().ConfigMaps(c.ns()).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if replace || cm.Data == nil {
			cm.Data = map[string]string{}
		}
		for k, v := range data {
			cm.Data[k] = v
		}
		_, err = c.Kube.CoreV1().ConfigMaps(c.ns()).Update(ctx, cm, metav1.UpdateOptions{FieldManager: kube.FieldManager})
		return err
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// SetQueueCPURequest sets config-deployment's queue-sidecar-cpu-request. Upstream's Deployments
// request 1.45 CPU at 3 replicas (activators 300m each): with the default 25m per queue-proxy the
// suites' pods no longer fit a 2-core node and stay Pending, which tests the node, not the autoscaler.
func (c *Cluster) SetQueueCPURequest(ctx context.Context, v string) error {
	return c.setConfig(ctx, DeploymentConfig, map[string]string{"queue-sidecar-cpu-request": v}, false)
}

// Restore puts back what Save read, restarts the autoscaler so that it reads its old configuration,
// and waits for the Deployments.
func (c *Cluster) Restore(ctx context.Context, s Saved, timeout time.Duration) error {
	for name, data := range s.ConfigMaps {
		if err := c.setConfig(ctx, name, data, true); err != nil {
			return err
		}
	}
	if s.HPAMin != nil {
		if err := c.setHPA(ctx, *s.HPAMin, *s.HPAMax); err != nil {
			return err
		}
	}
	for d, n := range s.Replicas {
		if err := c.scale(ctx, d, n, d == Autoscaler); err != nil {
			return err
		}
	}
	return c.waitDeployments(ctx, s.Replicas, nil, timeout)
}

// ApplyShape scales the autoscaler and the activator to sh.Replicas (the activator's HPA too, as
// upstream's CI pins it), writes the buckets and upstream CI's lease timings into
// config-leader-election, and restarts the autoscaler so that every replica reads them.
func (c *Cluster) ApplyShape(ctx context.Context, sh Shape) error {
	data := map[string]string{"buckets": strconv.Itoa(sh.Buckets)}
	for k, v := range LeaseTimings {
		data[k] = v
	}
	if err := c.setConfig(ctx, LeaderElection, data, false); err != nil {
		return err
	}
	if _, err := c.Kube.AutoscalingV2().HorizontalPodAutoscalers(c.ns()).Get(ctx, Activator, metav1.GetOptions{}); err == nil {
		if err := c.setHPA(ctx, int32(sh.Replicas), int32(sh.Replicas)); err != nil {
			return err
		}
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	if err := c.scale(ctx, Activator, int32(sh.Replicas), false); err != nil {
		return err
	}
	return c.scale(ctx, Autoscaler, int32(sh.Replicas), true)
}

func (c *Cluster) setHPA(ctx context.Context, min, max int32) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		hpas := c.Kube.AutoscalingV2().HorizontalPodAutoscalers(c.ns())
		h, err := hpas.Get(ctx, Activator, metav1.GetOptions{})
		if err != nil {
			return err
		}
		h.Spec.MinReplicas, h.Spec.MaxReplicas = ptr.To(min), max
		_, err = hpas.Update(ctx, h, metav1.UpdateOptions{FieldManager: kube.FieldManager})
		return err
	})
}

// scale sets a Deployment's replicas and, with restart, stamps its pod template so that every pod
// is replaced.
func (c *Cluster) scale(ctx context.Context, name string, n int32, restart bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		deps := c.Kube.AppsV1().Deployments(c.ns())
		d, err := deps.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Replicas = ptr.To(n)
		if restart {
			if d.Spec.Template.Annotations == nil {
				d.Spec.Template.Annotations = map[string]string{}
			}
			d.Spec.Template.Annotations[RestartAnnotation] = c.Clock.Now().UTC().Format(time.RFC3339Nano)
		}
		_, err = deps.Update(ctx, d, metav1.UpdateOptions{FieldManager: kube.FieldManager})
		return err
	})
}

// WaitShape waits until both Deployments run sh.Replicas Ready pods of the wanted images (component →
// image; a missing entry accepts any) and nothing else, deletes bucket Leases of other bucket counts
// (upstream's HA test counts every Lease an autoscaler pod holds, so a stale one held by a pod that
// is gone would never let it see new leaders), and waits until every bucket Lease is held by one of
// the Ready autoscaler pods.
func (c *Cluster) WaitShape(ctx context.Context, sh Shape, images map[string]string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n := int32(sh.Replicas)
	if err := c.waitDeployments(ctx, map[string]int32{Autoscaler: n, Activator: n}, images, timeout); err != nil {
		return err
	}
	if err := c.DeleteStaleLeases(ctx, sh.Buckets); err != nil {
		return err
	}
	var pending string
	err := kube.Poll(ctx, c.poll(), func(ctx context.Context) (bool, error) {
		pods, err := c.readyPods(ctx, Autoscaler)
		if err != nil {
			pending = err.Error()
			return false, nil
		}
		holders, err := c.BucketHolders(ctx, sh.Buckets)
		if err != nil {
			pending = err.Error()
			return false, nil
		}
		for _, name := range bucketNames(sh.Buckets) {
			pod, _, _ := strings.Cut(holders[name], "_")
			if _, ok := pods[pod]; !ok {
				pending = fmt.Sprintf("lease %s held by %q, not a Ready autoscaler pod", name, holders[name])
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("bucket leases: %w (%s)", err, pending)
	}
	return nil
}

func bucketNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = BucketLease(i, n)
	}
	return out
}

// BucketHolders maps each bucket Lease of n buckets to its holder identity ("" when missing or free).
func (c *Cluster) BucketHolders(ctx context.Context, n int) (map[string]string, error) {
	leases, err := c.Kube.CoordinationV1().Leases(c.ns()).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, b := range bucketNames(n) {
		want[b] = true
	}
	out := map[string]string{}
	for _, l := range leases.Items {
		if want[l.Name] {
			out[l.Name] = ptr.Deref(l.Spec.HolderIdentity, "")
		}
	}
	return out, nil
}

// DeleteStaleLeases deletes the autoscaler bucket Leases that do not belong to a set of n buckets.
func (c *Cluster) DeleteStaleLeases(ctx context.Context, n int) error {
	leases, err := c.Kube.CoordinationV1().Leases(c.ns()).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	suffix := fmt.Sprintf("-of-%02d", n)
	for _, l := range leases.Items {
		if strings.HasPrefix(l.Name, "autoscaler-bucket-") && !strings.HasSuffix(l.Name, suffix) {
			c.logf("deleting stale lease %s (held by %q)", l.Name, ptr.Deref(l.Spec.HolderIdentity, ""))
			if err := c.Kube.CoordinationV1().Leases(c.ns()).Delete(ctx, l.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
	}
	return nil
}

// readyPods returns the Ready, not terminating pods of a component by name, failing while any of
// its pods is not Ready or is terminating.
func (c *Cluster) readyPods(ctx context.Context, component string) (map[string]*corev1.Pod, error) {
	pods, err := c.Kube.CoreV1().Pods(c.ns()).List(ctx, metav1.ListOptions{LabelSelector: "app=" + component})
	if err != nil {
		return nil, err
	}
	out := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil {
			return nil, fmt.Errorf("%s pod %s is terminating", component, p.Name)
		}
		if !podReady(p) {
			return nil, fmt.Errorf("%s pod %s is not Ready", component, p.Name)
		}
		out[p.Name] = p
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitDeployments waits until each Deployment has rolled out to want[name] Ready pods, no other pod
// (terminating ones included), and, when images names one, that image.
func (c *Cluster) waitDeployments(ctx context.Context, want map[string]int32, images map[string]string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	var pending error
	err := kube.Poll(ctx, c.poll(), func(ctx context.Context) (bool, error) {
		for _, name := range names {
			d, err := c.Kube.AppsV1().Deployments(c.ns()).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				pending = err
				return false, nil
			}
			if err := rolledOut(d, want[name], images[name]); err != nil {
				pending = err
				return false, nil
			}
			pods, err := c.readyPods(ctx, name)
			if err != nil {
				pending = err
				return false, nil
			}
			if int32(len(pods)) != want[name] {
				pending = fmt.Errorf("%s: %d pods, want %d", name, len(pods), want[name])
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && pending != nil {
			return fmt.Errorf("not rolled out after %s: %w", timeout, pending)
		}
		return err
	}
	return nil
}

func rolledOut(d *appsv1.Deployment, n int32, image string) error {
	if image != "" {
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if ctr.Name == d.Name && ctr.Image != image {
				return fmt.Errorf("%s runs %s, want %s", d.Name, ctr.Image, image)
			}
		}
	}
	s := d.Status
	if s.ObservedGeneration < d.Generation || ptr.Deref(d.Spec.Replicas, 1) != n ||
		s.UpdatedReplicas != n || s.AvailableReplicas != n || s.Replicas != n {
		return fmt.Errorf("%s: generation %d observed %d, %d updated, %d available, %d total, want %d",
			d.Name, d.Generation, s.ObservedGeneration, s.UpdatedReplicas, s.AvailableReplicas, s.Replicas, n)
	}
	return nil
}

// EnsureGateway creates the Service the suites look up through GATEWAY_OVERRIDE: headless, no
// selector and no ports. knative.dev/pkg/test/ingress maps a URL's port through the Service's
// NodePorts when --ingressendpoint is set; with no ports the port stays 80 and the tests dial the
// lab's ingress on the bridge IP directly. (The ingress's own Service, thaw-system/thaw-ingress, has
// port 80 without a NodePort, which would map to port 0.)
func (c *Cluster) EnsureGateway(ctx context.Context, namespace, name string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": kube.FieldManager}},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone},
	}
	_, err := c.Kube.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{FieldManager: kube.FieldManager})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
