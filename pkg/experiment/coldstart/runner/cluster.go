package runner

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

const (
	systemNamespace  = "knative-serving"
	configAutoscaler = "config-autoscaler"
	graceKey         = "scale-to-zero-grace-period"
	// minGrace is the smallest grace period upstream's config validation accepts.
	minGrace = "6s"
	// autoscalerLease is the autoscaler's single-bucket Lease.
	autoscalerLease = "autoscaler-bucket-00-of-01"
)

// setConfigKey sets key in config-autoscaler and returns a function that puts the previous value back
// (or removes the key when it was absent).
func setConfigKey(ctx context.Context, kc kubernetes.Interface, key, value string) (func(context.Context) error, error) {
	cms := kc.CoreV1().ConfigMaps(systemNamespace)
	cm, err := cms.Get(ctx, configAutoscaler, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", systemNamespace, configAutoscaler, err)
	}
	old, had := cm.Data[key]
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[key] = value
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: kube.FieldManager}); err != nil {
		return nil, fmt.Errorf("set %s %s=%s: %w", configAutoscaler, key, value, err)
	}
	return func(ctx context.Context) error {
		// Re-read: others may have changed other keys meanwhile. Retry on a conflict.
		var err error
		for range 5 {
			var cm2 *corev1.ConfigMap
			cm2, err = cms.Get(ctx, configAutoscaler, metav1.GetOptions{})
			if err != nil {
				continue
			}
			if cm2.Data == nil {
				cm2.Data = map[string]string{}
			}
			if had {
				cm2.Data[key] = old
			} else {
				delete(cm2.Data, key)
			}
			if _, err = cms.Update(ctx, cm2, metav1.UpdateOptions{FieldManager: kube.FieldManager}); err == nil {
				return nil
			}
		}
		return fmt.Errorf("restore %s %s: %w", configAutoscaler, key, err)
	}, nil
}

// waitAutoscalerLeads waits until the autoscaler Lease is held by a live pod running image: a swapped-in
// autoscaler decides nothing until the old one's Lease is released or expires.
func waitAutoscalerLeads(ctx context.Context, kc kubernetes.Interface, image string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	err := kube.Poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		l, err := kc.CoordinationV1().Leases(systemNamespace).Get(ctx, autoscalerLease, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			last = fmt.Sprint("lease: ", err)
			return false, nil
		}
		holder := *l.Spec.HolderIdentity
		pods, err := kc.CoreV1().Pods(systemNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=autoscaler"})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && len(p.Spec.Containers) > 0 && p.Spec.Containers[0].Image == image &&
				strings.HasPrefix(holder, p.Name+"_") {
				return true, nil
			}
		}
		last = "lease held by " + holder
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("autoscaler %s not leading: %w (%s)", image, err, last)
	}
	return nil
}

// SetConfigAutoscaler sets key in config-autoscaler for an experiment and returns the function that
// puts the previous value back; other experiments (chaos) share it.
func SetConfigAutoscaler(ctx context.Context, kc kubernetes.Interface, key, value string) (func(context.Context) error, error) {
	return setConfigKey(ctx, kc, key, value)
}
