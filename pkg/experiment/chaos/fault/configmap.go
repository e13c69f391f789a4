package fault

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ConfigMapRemove deletes a ConfigMap that a revision's pods mount: pods already running keep their
// copy, but every new pod stays in ContainerCreating (the kubelet cannot mount it), so the revision
// cannot scale from zero: a revision whose pods never become ready, without changing the revision.
// The undo creates the ConfigMap again as it was.
func ConfigMapRemove(kc kubernetes.Interface, namespace, name string) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		cms := kc.CoreV1().ConfigMaps(namespace)
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return name, nil, err
		}
		saved := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cm.Name, Namespace: cm.Namespace, Labels: cm.Labels},
			Data: cm.Data, BinaryData: cm.BinaryData}
		undo := func(ctx context.Context) error {
			_, err := cms.Create(ctx, saved, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		}
		target := fmt.Sprintf("configmap %s/%s deleted: new pods cannot start", namespace, name)
		if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			// It may be gone anyway: the undo puts it back if so.
			return target, undo, err
		}
		return target, undo, nil
	})
}
