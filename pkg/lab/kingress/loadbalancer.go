package kingress

import (
	"context"
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// managedBy marks the objects this package writes, so that the EndpointSlice
// controllers leave our slice alone.
const managedBy = "kingress.thaw.dev"

// LoadBalancer describes the in-cluster face of the host proxy: a Service
// without selector whose single endpoint is the proxy's address on the
// node's bridge. Routes' placeholder ExternalName Services point at its DNS
// name, so in-cluster clients reach the proxy through kube-proxy.
type LoadBalancer struct {
	Namespace string
	Name      string
	// IP and Port are where the proxy listens (must not be loopback: the
	// apiserver refuses loopback endpoints).
	IP   string
	Port int32
}

// Domain is the Service's cluster-local DNS name.
func (lb LoadBalancer) Domain(clusterDomain string) string {
	return fmt.Sprintf("%s.%s.svc.%s", lb.Name, lb.Namespace, clusterDomain)
}

func (lb LoadBalancer) validate() error {
	ip := net.ParseIP(lb.IP)
	switch {
	case lb.Namespace == "" || lb.Name == "":
		return fmt.Errorf("load balancer needs a namespace and a name")
	case ip == nil || ip.To4() == nil:
		return fmt.Errorf("load balancer IP %q is not an IPv4 address", lb.IP)
	case ip.IsLoopback() || ip.IsUnspecified():
		return fmt.Errorf("load balancer IP %s cannot be an endpoint (loopback or unspecified)", lb.IP)
	case lb.Port <= 0 || lb.Port > 65535:
		return fmt.Errorf("load balancer port %d out of range", lb.Port)
	}
	return nil
}

// EnsureLoadBalancer creates or updates the namespace, Service and
// EndpointSlice of lb. It is idempotent.
func EnsureLoadBalancer(ctx context.Context, kube kubernetes.Interface, lb LoadBalancer) error {
	if err := lb.validate(); err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lb.Namespace}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", lb.Namespace, err)
	}
	labels := map[string]string{"app.kubernetes.io/managed-by": managedBy}

	wantSvc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: lb.Name, Namespace: lb.Namespace, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP,
			// Port 80 whatever the proxy's port: placeholder Services and
			// Knative URLs assume it. The listener speaks HTTP/1 and h2c.
			Ports: []corev1.ServicePort{{
				Name:       "http",
				Protocol:   corev1.ProtocolTCP,
				Port:       80,
				TargetPort: intstr.FromInt32(lb.Port),
			}},
		},
	}
	svcs := kube.CoreV1().Services(lb.Namespace)
	got, err := svcs.Get(ctx, lb.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := svcs.Create(ctx, wantSvc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create service %s/%s: %w", lb.Namespace, lb.Name, err)
		}
	case err != nil:
		return fmt.Errorf("get service %s/%s: %w", lb.Namespace, lb.Name, err)
	case len(got.Spec.Selector) != 0 || !equality.Semantic.DeepEqual(got.Spec.Ports, wantSvc.Spec.Ports):
		upd := got.DeepCopy()
		upd.Spec.Selector = nil
		upd.Spec.Ports = wantSvc.Spec.Ports
		if _, err := svcs.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update service %s/%s: %w", lb.Namespace, lb.Name, err)
		}
	}

	sliceLabels := map[string]string{
		discoveryv1.LabelServiceName: lb.Name,
		discoveryv1.LabelManagedBy:   managedBy,
	}
	wantSlice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: lb.Name, Namespace: lb.Namespace, Labels: sliceLabels},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{lb.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{
			Name:     ptr.To("http"),
			Protocol: ptr.To(corev1.ProtocolTCP),
			Port:     ptr.To(lb.Port),
		}},
	}
	slices := kube.DiscoveryV1().EndpointSlices(lb.Namespace)
	gotSlice, err := slices.Get(ctx, lb.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := slices.Create(ctx, wantSlice, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create endpointslice %s/%s: %w", lb.Namespace, lb.Name, err)
		}
	case err != nil:
		return fmt.Errorf("get endpointslice %s/%s: %w", lb.Namespace, lb.Name, err)
	case !equality.Semantic.DeepEqual(gotSlice.Endpoints, wantSlice.Endpoints) ||
		!equality.Semantic.DeepEqual(gotSlice.Ports, wantSlice.Ports) ||
		gotSlice.Labels[discoveryv1.LabelServiceName] != lb.Name:
		upd := gotSlice.DeepCopy()
		upd.Labels = sliceLabels
		upd.Endpoints = wantSlice.Endpoints
		upd.Ports = wantSlice.Ports
		if _, err := slices.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update endpointslice %s/%s: %w", lb.Namespace, lb.Name, err)
		}
	}
	return nil
}
