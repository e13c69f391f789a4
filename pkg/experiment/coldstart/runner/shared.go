package runner

import (
	"context"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// The pieces other experiments on a cluster share with the cold-start runner (the trace replay): the
// same ksvc shape, creation and readiness wait, namespace handling and swap-in check.

// Service is a Ready ksvc of an experiment: its name, latest ready revision and URL host.
type Service = service

// Deployment is the name of the service's revision Deployment.
func (s *Service) Deployment() string { return s.deployment() }

// KsvcObject is the cold-start experiment's ksvc (see ksvcObject): one pod at first, scaling to zero
// by itself, small CPU requests. Callers may add annotations to its template.
func KsvcObject(name, ns, image, cpu string) *unstructured.Unstructured {
	return ksvcObject(name, ns, image, cpu)
}

// ServiceOptions are what CreateServices needs of Options.
type ServiceOptions struct {
	Client    *kube.Client
	Namespace string
	Image     string
	Routable  ksvc.ProgrammedFunc
	Progress  io.Writer
	Clock     clock.Clock
}

// CreateServices applies objs (ksvcs in o.Namespace) and waits until all are Ready (and routable when
// o.Routable is set), returning them in the order of objs.
func CreateServices(ctx context.Context, o ServiceOptions, objs []*unstructured.Unstructured) ([]*Service, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	r := &run{o: Options{Client: o.Client, Namespace: o.Namespace, Image: o.Image, Routable: o.Routable,
		Progress: o.Progress, Clock: o.Clock}}
	return r.applyServices(ctx, objs)
}

// EnsureNamespace creates ns unless it exists.
func EnsureNamespace(ctx context.Context, c *kube.Client, ns string) error {
	return ensureNamespace(ctx, c, ns)
}

// DeleteNamespace deletes ns and everything in it (a missing ns is fine).
func DeleteNamespace(ctx context.Context, c *kube.Client, ns string) error {
	return deleteNamespace(ctx, c, ns)
}

// WaitAutoscalerLeads waits until the autoscaler Lease is held by a live pod running image.
func WaitAutoscalerLeads(ctx context.Context, kc kubernetes.Interface, image string, timeout time.Duration) error {
	return waitAutoscalerLeads(ctx, kc, image, timeout)
}

// Settle is the pause after a swap before the first request (see settle).
const Settle = settle
