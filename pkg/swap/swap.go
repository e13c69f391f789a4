// Package swap puts Thaw's activator and autoscaler images into any Knative Serving install and takes
// them out again, changing nothing else: one strategic-merge patch per Deployment sets the container's
// image (containers merge by name) and records the image it replaced in an annotation, so that unswap
// needs no memory of its own. It waits for the rollout.
//
// A strategic-merge patch, unlike `kubectl apply` of a partial manifest, has no three-way merge against
// kubectl's last-applied annotation: an install made with client-side apply keeps every field, and the
// annotation (what upstream's manifests said) is left as it was.
package swap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

const (
	// Namespace is Knative Serving's namespace in a standard install.
	Namespace = "knative-serving"
	// Annotation, on a swapped Deployment, holds the image the swap replaced (upstream's, usually).
	Annotation = "thaw.dev/swapped-from"
	// AnnotationTo holds the image the swap put in: when the Deployment runs another one, someone
	// changed it since (an upgrade of upstream's, say), and the remembered image is stale.
	AnnotationTo = "thaw.dev/swapped-to"
	// FieldManager owns the image fields the swap writes.
	FieldManager = "thaw-swap"
)

// Components are the Deployments the swap touches; each has a container of the same name.
var Components = []string{"activator", "autoscaler"}

// Images maps a component to an image reference.
type Images map[string]string

// Validate checks that want names only known components, each with an image. Not every component
// has to be named: a swap of only the activator leaves the autoscaler alone.
func (im Images) Validate() error {
	if len(im) == 0 {
		return errors.New("no image given")
	}
	for c, img := range im {
		if !known(c) {
			return fmt.Errorf("unknown component %q (only %v are swapped)", c, Components)
		}
		if img == "" {
			return fmt.Errorf("empty image for %s", c)
		}
	}
	return nil
}

func known(c string) bool {
	for _, k := range Components {
		if k == c {
			return true
		}
	}
	return false
}

// Options shape a swap.
type Options struct {
	Namespace string        // default Namespace
	Timeout   time.Duration // for the rollout; default 5 minutes
	Interval  time.Duration // between rollout checks; default 500 ms
	Clock     clock.WithTicker
	// Progress, when set, hears what the swap is waiting for.
	Progress func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = Namespace
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	return o
}

// State is one Deployment's image and, when swapped, the images the swap replaced and put in.
type State struct {
	Image       string
	SwappedFrom string // "" when not swapped
	SwappedTo   string
}

// Swapped reports whether the Deployment runs what a swap put in, so that SwappedFrom is still the
// image to go back to.
func (s State) Swapped() bool { return s.SwappedFrom != "" && s.SwappedTo == s.Image }

// Current reads each component's image and the remembered one.
func Current(ctx context.Context, kc kubernetes.Interface, ns string) (map[string]State, error) {
	if ns == "" {
		ns = Namespace
	}
	out := map[string]State{}
	for _, c := range Components {
		d, err := kc.AppsV1().Deployments(ns).Get(ctx, c, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		img, err := image(d, c)
		if err != nil {
			return nil, err
		}
		out[c] = State{Image: img, SwappedFrom: d.Annotations[Annotation], SwappedTo: d.Annotations[AnnotationTo]}
	}
	return out, nil
}

func image(d *appsv1.Deployment, container string) (string, error) {
	for _, ctr := range d.Spec.Template.Spec.Containers {
		if ctr.Name == container {
			return ctr.Image, nil
		}
	}
	return "", fmt.Errorf("deployment %s/%s has no container %q", d.Namespace, d.Name, container)
}

// patch sets container's image and the annotations (nil removes them); nothing else.
func patch(container, img string, swappedFrom *string) []byte {
	var from, to any
	if swappedFrom != nil {
		from, to = *swappedFrom, img
	}
	p := map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{Annotation: from, AnnotationTo: to}},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []any{map[string]any{"name": container, "image": img}}}}},
	}
	b, _ := json.Marshal(p)
	return b
}

// Swap sets want's images and waits for the rollout. A Deployment not swapped yet remembers the image
// it ran; one already swapped keeps the image remembered first, so swapping twice still unswaps to
// upstream's; one whose image changed since its swap remembers the image it runs now. It returns the
// remembered images.
func Swap(ctx context.Context, kc kubernetes.Interface, want Images, o Options) (Images, error) {
	if err := want.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	cur, err := Current(ctx, kc, o.Namespace)
	if err != nil {
		return nil, err
	}
	remembered := Images{}
	for _, c := range Components {
		img, ok := want[c]
		if !ok {
			continue
		}
		from := cur[c].SwappedFrom
		if !cur[c].Swapped() {
			if cur[c].Image == img {
				continue // already runs it and was never swapped: nothing to remember or change
			}
			from = cur[c].Image
		}
		remembered[c] = from
		if err := write(ctx, kc, o.Namespace, c, patch(c, img, &from)); err != nil {
			return remembered, err
		}
	}
	return remembered, Wait(ctx, kc, want, o)
}

// Unswap puts back the remembered images (or to's, for the components it names) and forgets them,
// then waits for the rollout. A component neither swapped nor named in to is left alone; if none is
// left to change, that is an error (nothing says which images to go back to). A component whose image
// changed since its swap is an error unless to names its image: going back to the remembered one
// would undo someone else's change (an upgrade of upstream's, say).
func Unswap(ctx context.Context, kc kubernetes.Interface, to Images, o Options) (Images, error) {
	if len(to) > 0 {
		if err := to.Validate(); err != nil {
			return nil, err
		}
	}
	o = o.withDefaults()
	cur, err := Current(ctx, kc, o.Namespace)
	if err != nil {
		return nil, err
	}
	back := Images{}
	for _, c := range Components {
		img := to[c]
		if img == "" && cur[c].SwappedFrom != "" {
			if !cur[c].Swapped() {
				return back, fmt.Errorf("deployment %s runs %s, not %s that the swap put in: changed since; name the image to go back to",
					c, cur[c].Image, cur[c].SwappedTo)
			}
			img = cur[c].SwappedFrom
		}
		if img == "" {
			continue
		}
		back[c] = img
		if err := write(ctx, kc, o.Namespace, c, patch(c, img, nil)); err != nil {
			return back, err
		}
	}
	if len(back) == 0 {
		return nil, fmt.Errorf("not swapped: no %s annotation on %v in %s; name the images to go back to", Annotation, Components, o.Namespace)
	}
	return back, Wait(ctx, kc, back, o)
}

func write(ctx context.Context, kc kubernetes.Interface, ns, c string, p []byte) error {
	_, err := kc.AppsV1().Deployments(ns).Patch(ctx, c, types.StrategicMergePatchType, p,
		metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil {
		return fmt.Errorf("patch deployment %s/%s: %w", ns, c, err)
	}
	return nil
}

// RolledOut reports whether d's controller has seen its latest spec and every replica runs it and
// is available.
func RolledOut(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want &&
		d.Status.Replicas == want && d.Status.AvailableReplicas >= want
}

// Wait waits (up to o.Timeout) until every component in want runs want's image on all its replicas. An
// image changed by someone else meanwhile is an error at once.
func Wait(ctx context.Context, kc kubernetes.Interface, want Images, o Options) error {
	o = o.withDefaults()
	deadline := o.Clock.Now().Add(o.Timeout)
	ticker := o.Clock.NewTicker(o.Interval)
	defer ticker.Stop()
	for {
		pending := ""
		for _, c := range Components {
			img, ok := want[c]
			if !ok {
				continue
			}
			d, err := kc.AppsV1().Deployments(o.Namespace).Get(ctx, c, metav1.GetOptions{})
			if err != nil {
				pending = err.Error()
				break
			}
			got, err := image(d, c)
			if err != nil {
				return err
			}
			if got != img {
				return fmt.Errorf("deployment %s runs %q, want %q (changed by someone else?)", c, got, img)
			}
			if d.Status.ObservedGeneration < d.Generation {
				pending = fmt.Sprintf("deployment %s: generation %d not seen by its controller yet", c, d.Generation)
				break
			}
			if !RolledOut(d) {
				pending = fmt.Sprintf("deployment %s: %d/%d updated, %d available, %d total", c,
					d.Status.UpdatedReplicas, replicas(d), d.Status.AvailableReplicas, d.Status.Replicas)
				break
			}
		}
		if pending == "" {
			return nil
		}
		if !o.Clock.Now().Before(deadline) {
			return fmt.Errorf("rollout not done after %s: %s", o.Timeout, pending)
		}
		o.Progress("waiting: %s", pending)
		select {
		case <-ctx.Done():
			return fmt.Errorf("rollout: %w (%s)", ctx.Err(), pending)
		case <-ticker.C():
		}
	}
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}
