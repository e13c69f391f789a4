package fault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault/nfqueue"
)

// NetRule is one iptables rule (without -I/-D) in the network namespace of process PID.
type NetRule struct {
	PID  int
	Args []string
}

// netRules adds rules to every Ready pod of p in its network namespace, each pod's after perPod (if
// any) ran for it; the undo deletes exactly the rules added, also when the injection stopped half-way.
func netRules(ctx context.Context, cd Containerd, p Pods, rules func() [][]string, perPod func(pid int) error) (int, Undo, error) {
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
		if perPod != nil {
			if err := perPod(pid); err != nil {
				return len(pods), undo, err
			}
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
// slow at once. (A fixed added RTT is NetworkDelay's.)
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
		}, nil)
		return fmt.Sprintf("%d activators ↔ pods :%s, %.1f%% of packets dropped each way", n, QueueProxyPorts, 100*loss), undo, err
	})
}

// DelayQueue is the NFQUEUE number of the delay fault. Queue numbers belong to a network namespace,
// so every activator's is the same.
const DelayQueue = 14

// MaxDelay bounds the delay fault's added latency: past it a request's timeout, not the network, is
// what the run would measure.
const MaxDelay = 10 * time.Second

// Delayer holds the packets of a bound queue; Close accepts what it holds and unbinds.
type Delayer interface {
	Close() error
	Stats() nfqueue.Stats
}

// OpenDelayer binds DelayQueue in the network namespace of process pid.
type OpenDelayer func(pid int) (Delayer, error)

// NFQueueDelayer opens an nfqueue.Delayer adding delay to each packet, holding at most maxQueued at
// once (0: nfqueue's default).
func NFQueueDelayer(delay time.Duration, maxQueued int) OpenDelayer {
	return func(pid int) (Delayer, error) {
		return nfqueue.Open(fmt.Sprintf("/proc/%d/ns/net", pid), nfqueue.Config{Queue: DelayQueue, Delay: delay, MaxQueued: maxQueued})
	}
}

// NetworkDelay adds a fixed delay to every packet from each Ready activator to the revisions' pods,
// without netem (the lab's kernel has no sch_netem): an iptables NFQUEUE rule in the activator's
// network namespace hands those packets to a queue bound in that namespace by this process, which
// holds each one for the delay and then accepts it. Only the way out is delayed, so a round trip (a
// connect, a request and its first response byte) takes the delay longer. --queue-bypass lets the
// packets through undelayed whenever no queue is bound (this process died), so a crash leaves a rule
// but no black hole. The undo deletes the rules first, then closes the queues, which accept what they
// still hold (a closed queue would drop it).
func NetworkDelay(cd Containerd, activators Pods, delay time.Duration, open OpenDelayer) Injector {
	return InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		if delay <= 0 || delay > MaxDelay {
			return "", nil, fmt.Errorf("delay %v: want more than 0 and at most %v", delay, MaxDelay)
		}
		type bound struct {
			pid int
			d   Delayer
		}
		var queues []bound
		n, undoRules, err := netRules(ctx, cd, activators, func() [][]string {
			return [][]string{{"OUTPUT", "-p", "tcp", "-m", "multiport", "--dports", QueueProxyPorts,
				"-j", "NFQUEUE", "--queue-num", strconv.Itoa(DelayQueue), "--queue-bypass"}}
		}, func(pid int) error {
			d, err := open(pid)
			if err != nil {
				return err
			}
			queues = append(queues, bound{pid, d})
			return nil
		})
		undo := func(ctx context.Context) error {
			var errs []error
			if undoRules != nil {
				errs = append(errs, undoRules(ctx))
			}
			for _, q := range queues {
				errs = append(errs, q.d.Close())
				slog.Info("network-delay: queue closed", "pid", q.pid, "stats", q.d.Stats().String())
			}
			return errors.Join(errs...)
		}
		return fmt.Sprintf("%d activators → pods :%s, +%v per packet (NFQUEUE %d)", n, QueueProxyPorts, delay, DelayQueue), undo, err
	})
}
