package fault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/faultinject"
)

// InjectedMargin is how long past the hold the ConfigMap's own expiry lets the faults last, so that
// they end by themselves even if the undo never runs (the tool killed).
const InjectedMargin = 30 * time.Second

// Injected turns on faults built into Thaw's components (package faultinject) for the hold: it
// writes the thaw-fault-injection ConfigMap with the given keys and an expiry, and the undo puts back
// what was there. It works on any cluster, but only where the components were deployed with
// THAW_FAULT_INJECTION=enabled (the deploy-time switch; this never sets it): elsewhere, upstream's
// components included, it refuses.
type Injected struct {
	Kube kubernetes.Interface
	// Faults are ConfigMap keys and values, e.g. "activator.pod-latency": "delay=200ms,p=0.5".
	Faults map[string]string
	Hold   time.Duration
	Clock  clock.PassiveClock
}

// Validate checks the keys and values as the components will read them.
func (f Injected) Validate() error {
	if len(f.Faults) == 0 {
		return errors.New("no fault to inject (--inject KEY=VALUE)")
	}
	var errs []error
	for _, c := range []faultinject.Component{faultinject.Activator, faultinject.Autoscaler} {
		if _, err := faultinject.Parse(c, f.Faults); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// components are the Deployments the faults' keys name.
func (f Injected) components() []string {
	var out []string
	for k := range f.Faults {
		c, _, _ := strings.Cut(k, ".")
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// enabled reports whether the Deployment's container has the switch on.
func (f Injected) enabled(ctx context.Context, name string) error {
	d, err := f.Kube.AppsV1().Deployments(SystemNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != name {
			continue
		}
		for _, e := range c.Env {
			if e.Name == faultinject.EnvVar && e.Value == faultinject.EnvEnabled {
				return nil
			}
		}
	}
	return fmt.Errorf("deployment %s has no %s=%s: its fault injection is off (Thaw's components only, switched on at deploy time)",
		name, faultinject.EnvVar, faultinject.EnvEnabled)
}

// Inject writes the ConfigMap.
func (f Injected) Inject(ctx context.Context) (string, Undo, error) {
	if err := f.Validate(); err != nil {
		return "", nil, err
	}
	for _, c := range f.components() {
		if err := f.enabled(ctx, c); err != nil {
			return "", nil, err
		}
	}
	var c clock.PassiveClock = clock.RealClock{}
	if f.Clock != nil {
		c = f.Clock
	}
	cms := f.Kube.CoreV1().ConfigMaps(SystemNamespace)
	old, err := cms.Get(ctx, faultinject.ConfigMapName, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return "", nil, err
	}
	data := maps.Clone(f.Faults)
	data[faultinject.UntilKey] = c.Now().Add(f.Hold + InjectedMargin).UTC().Format(time.RFC3339)
	keys := slices.Sorted(maps.Keys(f.Faults))
	target := fmt.Sprintf("%s: %s", faultinject.ConfigMapName, strings.Join(keys, ", "))
	var undo Undo
	if old == nil || apierrors.IsNotFound(err) {
		undo = func(ctx context.Context) error {
			err := cms.Delete(ctx, faultinject.ConfigMapName, metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: faultinject.ConfigMapName, Namespace: SystemNamespace},
			Data: data}, metav1.CreateOptions{})
		return target, undo, err
	}
	saved := old.Data
	undo = func(ctx context.Context) error {
		cur, err := cms.Get(ctx, faultinject.ConfigMapName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: faultinject.ConfigMapName, Namespace: SystemNamespace},
				Data: saved}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		cur.Data = saved
		_, err = cms.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}
	upd := old.DeepCopy()
	upd.Data = data
	_, err = cms.Update(ctx, upd, metav1.UpdateOptions{})
	return target, undo, err
}
