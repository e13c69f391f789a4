package fault

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// NetRule is one iptables rule (without -I/-D) in the network namespace of process PID.
type NetRule struct {
	PID  int
	Args []string
}

// netRules adds rules to every Ready pod of p in its network namespace; the undo deletes exactly the
// rules added, also when the injection stopped half-way.
func netRules(ctx context.Context, cd Containerd, p Pods, rules func() [][]string) (int, Undo, error) {
	var added []NetRule
	undo := func(ctx context.Context) error {
		var errs []error
		for _, r := range added {
			_, err := cd.nsIptables(ctx, r.PID, append([]string{"-D"}, r.Args...)...)
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	pods, err := p.Ready(ctx)
	if err != nil {
		return 0, nil, err
	}
	for _, pod := range pods {
		pid, err := cd.PID(ctx, containerID(&pod, p.Component))
		if err != nil {
			return len(pods), undo, err
		}
		for _, args := range rules() {
			if _, err := cd.nsIptables(ctx, pid, append([]string{"-I"}, args...)...); err != nil {
				return len(pods), undo, err
			}
			added = append(added, NetRule{pid, args})
		}
	}
	return len(pods), undo, nil
}

// QueueProxyPorts are where the activator sends requests and probes: a pod's queue-proxy (8012) and
// a revision's private Service (80, DNATed outside the activator's namespace).
const QueueProxyPorts = "80,8012"

// NetworkLoss drops a random share of the packets between every Ready activator and the revisions'
// pods, both ways, with iptables' statistic match in the activator's network namespace. A lost SYN
// costs a 1 s retransmit and a lost segment at least the 200 ms minimum RTO, so the hop is lossy and
// slow at once. (netem would add a fixed RTT; the lab's kernel has no sch_netem and no modules.)
// Traffic to the autoscaler and the apiserver is left alone.
func NetworkLoss(cd Containerd, activators Pods, loss float64) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		if loss <= 0 || loss >= 1 {
			return "", nil, fmt.Errorf("loss %v: want a share between 0 and 1", loss)
		}
		p := strconv.FormatFloat(loss, 'f', 4, 64)
		drop := []string{"-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"}
		n, undo, err := netRules(ctx, cd, activators, func() [][]string {
			return [][]string{
				append([]string{"OUTPUT", "-p", "tcp", "-m", "multiport", "--dports", QueueProxyPorts}, drop...),
				append([]string{"INPUT", "-p", "tcp", "-m", "multiport", "--sports", QueueProxyPorts}, drop...),
			}
		})
		return fmt.Sprintf("%d activators ↔ pods :%s, %.1f%% of packets dropped each way", n, QueueProxyPorts, 100*loss), undo, err
	})
}
