// Package swap replaces the images of Knative Serving's activator and autoscaler Deployments, and
// nothing else, then waits for the rollout. The same change as a kustomize overlay is in config/.
package swap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// Namespace of Knative Serving.
const Namespace = "knative-serving"

// Components are the Deployments (and their container names) the swap touches.
var Components = []string{"activator", "autoscaler"}

// Images names one image per component.
type Images map[string]string

// Validate checks that every component has an image and nothing else is named.
func (im Images) Validate() error {
	for _, c := range Components {
		if im[c] == "" {
			return fmt.Errorf("no image for %s", c)
		}
	}
	if len(im) != len(Components) {
		return fmt.Errorf("images for unknown components in %v (only %v are swapped)", im, Components)
	}
	return nil
}

// patch is a strategic-merge patch setting one container's image: containers merge by name, so no
// other field of the Deployment changes.
func patch(container, image string) []byte {
	p := map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []any{map[string]any{"name": container, "image": image}}}}}}
	b, _ := json.Marshal(p)
	return b
}

// Current returns the images the Deployments run now.
func Current(ctx context.Context, kc kubernetes.Interface) (Images, error) {
	out := Images{}
	for _, c := range Components {
		d, err := kc.AppsV1().Deployments(Namespace).Get(ctx, c, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if ctr.Name == c {
				out[c] = ctr.Image
			}
		}
		if out[c] == "" {
			return nil, fmt.Errorf("deployment %s has no container %q", c, c)
		}
	}
	return out, nil
}

// Restore puts want back with apply, unless the Deployments already run it (an experiment that
// swapped sides restores what it found, and does nothing when that is still in place).
func Restore(ctx context.Context, kc kubernetes.Interface, want Images, apply func(context.Context, Images) error) error {
	cur, err := Current(ctx, kc)
	if err == nil && cur["activator"] == want["activator"] && cur["autoscaler"] == want["autoscaler"] {
		return nil
	}
	return apply(ctx, want)
}

// Apply sets the images and waits (up to timeout) until both Deployments have rolled out.
func Apply(ctx context.Context, kc kubernetes.Interface, want Images, timeout time.Duration) error {
	if err := want.Validate(); err != nil {
		return err
	}
	for _, c := range Components {
		_, err := kc.AppsV1().Deployments(Namespace).Patch(ctx, c, types.StrategicMergePatchType,
			patch(c, want[c]), metav1.PatchOptions{FieldManager: kube.FieldManager})
		if err != nil {
			return fmt.Errorf("patch %s: %w", c, err)
		}
	}
	return WaitRollout(ctx, kc, want, timeout)
}

// WaitRollout waits until every component runs want's image on all its replicas.
func WaitRollout(ctx context.Context, kc kubernetes.Interface, want Images, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var pending error
	err := kube.Poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, c := range Components {
			d, err := kc.AppsV1().Deployments(Namespace).Get(ctx, c, metav1.GetOptions{})
			if err != nil {
				pending = err
				return false, nil
			}
			img := ""
			for _, ctr := range d.Spec.Template.Spec.Containers {
				if ctr.Name == c {
					img = ctr.Image
				}
			}
			if img != want[c] {
				return false, fmt.Errorf("deployment %s image is %q, want %q (changed by someone else?)", c, img, want[c])
			}
			if !kube.DeploymentAvailable(d) {
				pending = fmt.Errorf("deployment %s: %d/%d updated, %d available, %d total", c,
					d.Status.UpdatedReplicas, deref(d.Spec.Replicas), d.Status.AvailableReplicas, d.Status.Replicas)
				return false, nil
			}
		}
		return true, nil
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("rollout not done after %s: %v", timeout, pending)
	}
	return err
}

func deref(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}
