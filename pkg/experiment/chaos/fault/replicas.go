package fault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ActivatorKillAll SIGKILLs every Ready activator pod at once: the ingress has no activator to send
// to until the kubelet has restarted one, which is what an activator-wide crash (a bad config, a
// node's OOM) costs.
func ActivatorKillAll(k Killer, p Pods) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		pods, err := p.Ready(ctx)
		if err != nil {
			return "", nil, err
		}
		var names []string
		var errs []error
		for _, pod := range pods {
			target, err := k.Kill(ctx, pod.Name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			names = append(names, target)
		}
		return fmt.Sprintf("all %d: %s", len(pods), strings.Join(names, ", ")), nil, errors.Join(errs...)
	})
}

// PodDeleteAll deletes every Ready pod of the component gracefully at once (a rollout gone wrong,
// a drained node): each pod drains on its own termination grace while the Deployment creates new ones.
func PodDeleteAll(p Pods) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		pods, err := p.Ready(ctx)
		if err != nil {
			return "", nil, err
		}
		var names []string
		var errs []error
		for _, pod := range pods {
			if err := p.Kube.CoreV1().Pods(SystemNamespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
				errs = append(errs, err)
				continue
			}
			names = append(names, pod.Name)
		}
		return fmt.Sprintf("all %d deleted: %s", len(pods), strings.Join(names, ", ")), nil, errors.Join(errs...)
	})
}

// AutoscalerDelete deletes the pod holding a random autoscaler bucket gracefully: the holder releases
// its Leases on the way out (or they expire), and its replacement is a new pod with a new IP.
func AutoscalerDelete(p Pods, rnd *rand.Rand) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		holders, buckets, err := BucketHolders(ctx, p.Kube, rnd)
		if err != nil {
			return "", nil, err
		}
		var errs []error
		for _, pod := range holders {
			got, err := p.Kube.CoreV1().Pods(SystemNamespace).Get(ctx, pod, metav1.GetOptions{})
			if err != nil || got.DeletionTimestamp != nil {
				// Already going (the previous delete): the Lease still names it until it lets go.
				errs = append(errs, fmt.Errorf("%s: not deletable: %v", pod, err))
				continue
			}
			if err := p.Kube.CoreV1().Pods(SystemNamespace).Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
				errs = append(errs, err)
				continue
			}
			return fmt.Sprintf("%s (delete) holding %d buckets", pod, len(buckets[pod])), nil, nil
		}
		return "", nil, errors.Join(errs...)
	})
}
