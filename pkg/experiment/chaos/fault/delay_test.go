package fault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault/nfqueue"
)

// fakeDelayer records its Close.
type fakeDelayer struct {
	pid    int
	closed *[]int
	mu     *sync.Mutex
}

func (f fakeDelayer) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.closed = append(*f.closed, f.pid)
	return nil
}

func (fakeDelayer) Stats() nfqueue.Stats { return nfqueue.Stats{} }

func TestNetworkDelayUndoesEveryRuleAndQueue(t *testing.T) {
	now := time.Unix(1e9, 0)
	for _, tc := range []struct {
		name string
		// failInsert: the n-th iptables insert fails; failOpen: binding the queue of that pid fails.
		failInsert, failOpen int
		wantErr              bool
		wantRules            int
		wantQueues           []int
	}{
		{name: "two activators, one rule and one queue each", wantRules: 2, wantQueues: []int{100, 101}},
		{name: "the second insert fails: the first rule and both queues go", failInsert: 2, wantErr: true, wantRules: 1, wantQueues: []int{100, 101}},
		{name: "the second queue cannot bind: the first rule and queue go", failOpen: 101, wantErr: true, wantRules: 1, wantQueues: []int{100}},
		{name: "the first queue cannot bind: nothing to undo", failOpen: 100, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := fake.NewClientset(
				pod(SystemNamespace, "activator-a", "activator", "activator", "ida", now, true),
				pod(SystemNamespace, "activator-b", "activator", "activator", "idb", now, true),
				pod(SystemNamespace, "activator-c", "activator", "activator", "idc", now, false))
			fx := &fakeExec{ids: []string{"ida", "idb", "idc"}, failOn: tc.failInsert}
			var mu sync.Mutex
			var opened, closed []int
			open := func(pid int) (Delayer, error) {
				if pid == tc.failOpen {
					return nil, errors.New("nfqueue: bind failed")
				}
				mu.Lock()
				defer mu.Unlock()
				opened = append(opened, pid)
				return fakeDelayer{pid: pid, closed: &closed, mu: &mu}, nil
			}
			target, undo, err := NetworkDelay(Containerd{Ctr: "ctr", Exec: fx.exec}, Pods{Kube: kc, Component: "activator"}, 100*time.Millisecond, open).Inject(context.Background())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !strings.Contains(target, "+100ms per packet") {
				t.Errorf("target %q", target)
			}
			if undo == nil {
				t.Fatal("no undo")
			}
			if err := undo(context.Background()); err != nil {
				t.Fatal(err)
			}
			var ins, del []string
			for _, c := range fx.cmds {
				if !strings.HasPrefix(c, "nsenter -t 10") || !strings.HasSuffix(c, "OUTPUT -p tcp -m multiport --dports 80,8012 -j NFQUEUE --queue-num 14 --queue-bypass") {
					t.Errorf("unexpected command %q", c)
				}
				if i := strings.Index(c, " -I "); i >= 0 {
					ins = append(ins, c[:i]+c[i+3:])
				}
				if i := strings.Index(c, " -D "); i >= 0 {
					del = append(del, c[:i]+c[i+3:])
				}
			}
			if tc.failInsert > 0 {
				ins = slices.Delete(ins, tc.failInsert-1, tc.failInsert)
			}
			if len(del) != tc.wantRules || !slices.Equal(ins, del) {
				t.Errorf("inserted %q\ndeleted %q", ins, del)
			}
			if !slices.Equal(opened, tc.wantQueues) || !slices.Equal(closed, tc.wantQueues) {
				t.Errorf("queues opened %v, closed %v, want %v", opened, closed, tc.wantQueues)
			}
		})
	}
}

func TestNetworkDelayRejectsBadDelays(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Millisecond, MaxDelay + time.Millisecond} {
		open := func(int) (Delayer, error) { return nil, fmt.Errorf("opened for %v", d) }
		if _, undo, err := NetworkDelay(Containerd{}, Pods{}, d, open).Inject(context.Background()); err == nil || undo != nil {
			t.Errorf("delay %v: err %v, undo %v", d, err, undo != nil)
		}
	}
}
