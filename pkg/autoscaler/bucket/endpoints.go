package bucket

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// StatPortName names the stat port on the bucket Service, as upstream's.
const StatPortName = "http"

// EnsureEndpoints points the bucket's Service and EndpointSlice (both named as the bucket, in ns) at
// ip:port, creating or taking them over. Upstream's forwarders fall back to the Service's DNS name
// when the holder's IP does not answer, so the owner keeps both as upstream's owner does.
func EnsureEndpoints(ctx context.Context, kube kubernetes.Interface, ns, bucket, ip string, port int32) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: bucket, Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: StatPortName, Port: port, TargetPort: intstr.FromInt32(port),
		}}},
	}
	if err := ensureService(ctx, kube, svc); err != nil {
		return fmt.Errorf("bucket Service %s/%s: %w", ns, bucket, err)
	}
	addrType := discoveryv1.AddressTypeIPv4
	if isIPv6(ip) {
		addrType = discoveryv1.AddressTypeIPv6
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: bucket, Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: bucket}},
		AddressType: addrType,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(StatPortName), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if err := ensureSlice(ctx, kube, es); err != nil {
		return fmt.Errorf("bucket EndpointSlice %s/%s: %w", ns, bucket, err)
	}
	return nil
}

func ensureService(ctx context.Context, kube kubernetes.Interface, want *corev1.Service) error {
	c := kube.CoreV1().Services(want.Namespace)
	got, err := c.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if len(got.Spec.Ports) == 1 && got.Spec.Ports[0].Name == StatPortName && got.Spec.Ports[0].Port == want.Spec.Ports[0].Port &&
		len(got.Spec.Selector) == 0 {
		return nil
	}
	got = got.DeepCopy()
	got.Spec.Ports, got.Spec.Selector = want.Spec.Ports, nil
	_, err = c.Update(ctx, got, metav1.UpdateOptions{})
	return err
}

func ensureSlice(ctx context.Context, kube kubernetes.Interface, want *discoveryv1.EndpointSlice) error {
	c := kube.DiscoveryV1().EndpointSlices(want.Namespace)
	got, err := c.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if got.AddressType != want.AddressType {
		// The address type is immutable: replace the slice.
		if err := c.Delete(ctx, want.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		_, err = c.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if len(got.Endpoints) == 1 && len(got.Endpoints[0].Addresses) == 1 && got.Endpoints[0].Addresses[0] == want.Endpoints[0].Addresses[0] &&
		len(got.Ports) == 1 && got.Ports[0].Port != nil && *got.Ports[0].Port == *want.Ports[0].Port &&
		got.Labels[discoveryv1.LabelServiceName] == want.Name {
		return nil
	}
	got = got.DeepCopy()
	if got.Labels == nil {
		got.Labels = map[string]string{}
	}
	got.Labels[discoveryv1.LabelServiceName] = want.Name
	got.Endpoints, got.Ports = want.Endpoints, want.Ports
	_, err = c.Update(ctx, got, metav1.UpdateOptions{})
	return err
}

func isIPv6(ip string) bool {
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			return true
		}
	}
	return false
}
