package fault

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// UserContainer is the name Knative gives the app's container.
const UserContainer = "user-container"

// UserPodKill kills the app container of a pod that is scaling up: the youngest pod of the chosen
// services, created less than Young ago, whose app container has just started. A cold request is
// then being held for it (by the activator) or has just been sent to it. It waits up to Wait for such
// a pod, since pods come and go with the cold load.
type UserPodKill struct {
	// Killer kills in the run's namespace (Killer.Namespace) the UserContainer.
	Killer Killer
	// Service selects the services whose pods may be killed (by serving.knative.dev/service).
	Service     func(name string) bool
	Young, Wait time.Duration
	Clock       clock.WithTicker
}

// Inject finds and kills one scaling-up pod.
func (u UserPodKill) Inject(ctx context.Context) (string, Undo, error) {
	var c clock.WithTicker = clock.RealClock{}
	if u.Clock != nil {
		c = u.Clock
	}
	deadline := c.Now().Add(u.Wait)
	for {
		pod, err := u.youngest(ctx, c)
		if err != nil {
			return "", nil, err
		}
		if pod != nil {
			age := c.Since(pod.CreationTimestamp.Time).Round(time.Second)
			target, err := u.Killer.Kill(ctx, pod.Name)
			return fmt.Sprintf("%s, %s old, ready %v", target, age, kube.PodReady(pod)), nil, err
		}
		if !c.Now().Before(deadline) {
			return "", nil, fmt.Errorf("no pod scaled up in %s", u.Wait)
		}
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-c.After(100 * time.Millisecond):
		}
	}
}

func (u UserPodKill) youngest(ctx context.Context, c clock.PassiveClock) (*corev1.Pod, error) {
	list, err := u.Killer.Kube.CoreV1().Pods(u.Killer.namespace()).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service"})
	if err != nil {
		return nil, err
	}
	var best *corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp != nil || !u.Service(p.Labels["serving.knative.dev/service"]) ||
			c.Since(p.CreationTimestamp.Time) > u.Young || containerID(p, UserContainer) == "" {
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	return best, nil
}
