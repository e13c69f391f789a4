package runner

import (
	"context"
	"fmt"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// service is one ksvc of the experiment.
type service struct {
	Name, Revision, Host string
}

func (s *service) deployment() string { return s.Revision + "-deployment" }

// serviceName is the i-th ksvc's name.
func serviceName(i int) string { return fmt.Sprintf("cs-%03d", i) }

// ksvcObject is the experiment's ksvc, as upstream's scale-from-zero benchmark makes it: it starts with
// one pod and scales to zero by itself, so each cold start hits a revision the autoscaler has decided
// at zero (a revision created at zero is at "unknown", where upstream and Thaw both ignore the first
// poke). A short stable window brings it back to zero quickly; the default readiness probe keeps
// queue-proxy's fast probing of the app (a periodSeconds would slow it down to that period); small CPU
// requests let the largest level fit the node.
func ksvcObject(name, ns, image, cpu string) *unstructured.Unstructured {
	ann := map[string]any{
		"autoscaling.knative.dev/class":                          "kpa.autoscaling.knative.dev",
		"autoscaling.knative.dev/window":                         "6s",
		"queue.sidecar.serving.knative.dev/cpu-resource-request": cpu,
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "serving.knative.dev/v1",
		"kind":       "Service",
		"metadata":   map[string]any{"name": name, "namespace": ns, "labels": map[string]any{"app.kubernetes.io/part-of": "thaw-coldstart"}},
		"spec": map[string]any{"template": map[string]any{
			"metadata": map[string]any{"annotations": ann},
			"spec": map[string]any{"containers": []any{map[string]any{
				"image":     image,
				"resources": map[string]any{"requests": map[string]any{"cpu": cpu}},
			}}},
		}},
	}}
}

// namespaceGoneTimeout bounds the wait for a namespace's deletion: 100 ksvcs and their pods take a
// minute or two to finalize on the lab.
const namespaceGoneTimeout = 5 * time.Minute

// namespacePoll is how often a terminating namespace is checked.
const namespacePoll = time.Second

// ensureNamespace creates ns unless it exists. A namespace still terminating (the last run's) is
// waited out first: creates into it fail, and its services, still listed, would pass for the new ones.
func ensureNamespace(ctx context.Context, c *kube.Client, ns string) error {
	if err := waitNamespaceGone(ctx, c, ns, namespacePoll); err != nil {
		return err
	}
	_, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// waitNamespaceGone returns once ns is not being deleted: it does not exist, or exists and is live.
func waitNamespaceGone(ctx context.Context, c *kube.Client, ns string, poll time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, poll, namespaceGoneTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, nil
		case err != nil:
			return false, nil // the apiserver blinked: ask again
		}
		return got.DeletionTimestamp == nil, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s still terminating after %v: %w", ns, namespaceGoneTimeout, err)
	}
	return nil
}

// createServices applies n ksvcs and waits until all are Ready, returning their revisions and hosts.
func (r *run) createServices(ctx context.Context) ([]*service, error) {
	o := r.o
	objs := make([]*unstructured.Unstructured, o.Services)
	for i := range objs {
		objs[i] = ksvcObject(serviceName(i), o.Namespace, o.Image, o.CPURequest)
	}
	return r.applyServices(ctx, objs)
}

// applyServices applies the ksvcs objs (all in o.Namespace) and waits until all are Ready, returning
// their revisions and hosts in the order of objs.
func (r *run) applyServices(ctx context.Context, objs []*unstructured.Unstructured) ([]*service, error) {
	o := r.o
	t0 := o.Clock.Now()
	actx, cancel := context.WithTimeout(ctx, 10*time.Minute) // 100 first pods on 2 cores
	defer cancel()
	if err := o.Client.Apply(actx, objs); err != nil {
		return nil, err
	}
	r.progress("created %d services in %s (image %s) in %s", len(objs), o.Namespace, o.Image, since(o.Clock, t0))
	svcs := make([]*service, len(objs))
	lastLog := o.Clock.Now()
	var pending string
	err := kube.Poll(actx, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		list, err := o.Client.Dynamic.Resource(ksvc.ServiceGVR).Namespace(o.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			pending = err.Error()
			return false, nil
		}
		byName := map[string]*unstructured.Unstructured{}
		for i := range list.Items {
			byName[list.Items[i].GetName()] = &list.Items[i]
		}
		ready := 0
		pending = ""
		for i := range svcs {
			name := objs[i].GetName()
			u := byName[name]
			if u == nil {
				pending = name + " missing"
				continue
			}
			s, why := readyService(u)
			if s == nil {
				pending = name + ": " + why
				continue
			}
			svcs[i] = s
			ready++
		}
		if now := o.Clock.Now(); now.Sub(lastLog) >= 10*time.Second && ready < len(svcs) {
			lastLog = now
			r.progress("waiting for services to be Ready: %d/%d (%s), e.g. %s", ready, len(svcs), since(o.Clock, t0), pending)
		}
		return ready == len(svcs), nil
	})
	if err != nil {
		return nil, fmt.Errorf("services not Ready after %s: %w (%s)", since(o.Clock, t0), err, pending)
	}
	r.progress("%d services Ready in %s", len(svcs), since(o.Clock, t0))
	if o.Routable != nil {
		for _, s := range svcs {
			if err := ksvc.WaitRoutable(ctx, o.Client, o.Namespace, s.Name, o.Routable, time.Minute); err != nil {
				return nil, err
			}
		}
	}
	return svcs, nil
}

// readyService reads a Ready ksvc's revision and host; nil and why when it is not Ready.
func readyService(u *unstructured.Unstructured) (*service, string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	ready := false
	why := "no Ready condition yet"
	for _, ci := range conds {
		m, _ := ci.(map[string]any)
		if m["type"] == "Ready" {
			ready = m["status"] == "True"
			why = fmt.Sprint(m["reason"], " ", m["message"])
		}
	}
	obs, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if !ready || obs < u.GetGeneration() {
		return nil, why
	}
	rev, _, _ := unstructured.NestedString(u.Object, "status", "latestReadyRevisionName")
	raw, _, _ := unstructured.NestedString(u.Object, "status", "url")
	host := ""
	if p, err := url.Parse(raw); err == nil {
		host = p.Host
	}
	if rev == "" || host == "" {
		return nil, "no revision or URL in status"
	}
	return &service{Name: u.GetName(), Revision: rev, Host: host}, ""
}

// deleteNamespace removes the experiment's namespace and everything in it.
func deleteNamespace(ctx context.Context, c *kube.Client, ns string) error {
	err := c.Kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	// Not waited for here (100 ksvcs take minutes to finalize): the next run that wants the namespace
	// waits in ensureNamespace.
	return nil
}
