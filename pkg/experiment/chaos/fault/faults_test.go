package fault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/thaw-dev/thaw/internal/testutil"
	"github.com/thaw-dev/thaw/pkg/faultinject"
	"github.com/thaw-dev/thaw/pkg/lab/proc"
)

func pod(ns, name, app, container, id string, created time.Time, isReady bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if isReady {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app, "serving.knative.dev/service": app},
			CreationTimestamp: metav1.NewTime(created)},
		Status: corev1.PodStatus{
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: container, ContainerID: "containerd://" + id,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
		},
	}
}

// fakeExec answers `ctr tasks ls` with one task per container ID (pid 100, 101, ...) and records
// every other command; failOn makes the n-th iptables insert fail.
type fakeExec struct {
	mu      sync.Mutex
	ids     []string
	cmds    []string
	inserts int
	failOn  int
}

func (f *fakeExec) exec(_ context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := name + " " + strings.Join(args, " ")
	if strings.Contains(line, "tasks ls") {
		out := "TASK PID STATUS\n"
		for i, id := range f.ids {
			out += fmt.Sprintf("%s %d RUNNING\n", id, 100+i)
		}
		return []byte(out), nil
	}
	f.cmds = append(f.cmds, line)
	if slices.Contains(args, "-I") {
		f.inserts++
		if f.inserts == f.failOn {
			return nil, errors.New("iptables: no chain")
		}
	}
	return nil, nil
}

func TestNetworkLossUndoesEveryRuleAdded(t *testing.T) {
	now := time.Unix(1e9, 0)
	for _, tc := range []struct {
		name    string
		failOn  int
		wantErr bool
		// inserted rules, and so deletes, expected
		want int
	}{
		{name: "two activators, two rules each", want: 4},
		{name: "the third insert fails: the two added are deleted", failOn: 3, wantErr: true, want: 2},
		{name: "the first insert fails: nothing to delete", failOn: 1, wantErr: true, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := fake.NewClientset(
				pod(SystemNamespace, "activator-a", "activator", "activator", "ida", now, true),
				pod(SystemNamespace, "activator-b", "activator", "activator", "idb", now, true),
				pod(SystemNamespace, "activator-c", "activator", "activator", "idc", now, false))
			fx := &fakeExec{ids: []string{"ida", "idb", "idc"}, failOn: tc.failOn}
			inj := NetworkLoss(Containerd{Ctr: "ctr", Exec: fx.exec}, Pods{Kube: kc, Component: "activator"}, 0.1)
			_, undo, err := inj.Inject(context.Background())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if undo == nil {
				t.Fatal("no undo")
			}
			if err := undo(context.Background()); err != nil {
				t.Fatal(err)
			}
			var ins, del []string
			for _, c := range fx.cmds {
				if !strings.HasPrefix(c, "nsenter -t 10") || !strings.Contains(c, "--probability 0.1000") {
					t.Errorf("unexpected command %q", c)
				}
				if i := strings.Index(c, " -I "); i >= 0 {
					if tc.failOn == 0 || len(ins)+1 != tc.failOn {
						ins = append(ins, c[:i]+c[i+3:])
					} else {
						ins = append(ins, "failed")
					}
				}
				if i := strings.Index(c, " -D "); i >= 0 {
					del = append(del, c[:i]+c[i+3:])
				}
			}
			ins = slices.DeleteFunc(ins, func(s string) bool { return s == "failed" })
			if len(del) != tc.want || !slices.Equal(ins, del) {
				t.Errorf("inserted %q\ndeleted %q", ins, del)
			}
		})
	}
}

func TestNetworkLossRejectsBadShares(t *testing.T) {
	for _, loss := range []float64{0, 1, -0.5, 2} {
		if _, _, err := NetworkLoss(Containerd{}, Pods{}, loss).Inject(context.Background()); err == nil {
			t.Errorf("loss %v accepted", loss)
		}
	}
}

type fakeDaemons struct {
	mu       sync.Mutex
	alive    bool
	stopErr  error
	started  []proc.Spec
	readyErr error
}

func (d *fakeDaemons) Alive(string) (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return 42, d.alive
}

func (d *fakeDaemons) Stop(context.Context, string, time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.alive = false
	return d.stopErr
}

func (d *fakeDaemons) Start(s proc.Spec) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.started = append(d.started, s)
	d.alive = true
	return true, nil
}

func TestOutageRestartsWithTheSameCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		alive    bool
		stopErr  error
		wantErr  bool
		wantUndo bool
	}{
		{name: "stopped and started", alive: true, wantUndo: true},
		{name: "a stop that fails half-way is still undone", alive: true, stopErr: errors.New("did not exit"), wantErr: true, wantUndo: true},
		{name: "not running: nothing to undo", alive: false, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &fakeDaemons{alive: tc.alive, stopErr: tc.stopErr}
			o := Outage{Daemons: d, Name: "kube-apiserver", Cmdline: func(pid int) ([]string, error) {
				return []string{"/bin/kube-apiserver", "--a=1", fmt.Sprint("--pid=", pid)}, nil
			}, Ready: func(context.Context) error { return nil }}
			_, undo, err := o.Inject(context.Background())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if (undo != nil) != tc.wantUndo {
				t.Fatalf("undo %v, want one: %v", undo != nil, tc.wantUndo)
			}
			if undo == nil {
				return
			}
			if err := undo(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(d.started) != 1 || d.started[0].Path != "/bin/kube-apiserver" || !slices.Equal(d.started[0].Args, []string{"--a=1", "--pid=42"}) {
				t.Errorf("started %+v", d.started)
			}
			if _, ok := d.Alive(""); !ok {
				t.Error("not running after the undo")
			}
		})
	}
}

func TestOutageUndoWaitsForReadyAndIsBounded(t *testing.T) {
	d := &fakeDaemons{alive: true}
	c := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	var calls atomic.Int32
	o := Outage{Daemons: d, Name: "kube-apiserver", Clock: c, Poll: time.Second,
		Cmdline: func(int) ([]string, error) { return []string{"/x"}, nil },
		Ready: func(context.Context) error {
			calls.Add(1)
			return errors.New("connection refused")
		}}
	_, undo, err := o.Inject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- undo(ctx) }()
	testutil.StepUntil(t, c, time.Second, func() bool { return calls.Load() >= 3 })
	cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Errorf("undo = %v, want a not-ready error", err)
	}
	if len(d.started) != 1 {
		t.Errorf("started %d times", len(d.started))
	}
}

// The schedule puts the apiserver back when the run is cancelled during the outage.
func TestOutageUndoneOnCancel(t *testing.T) {
	d := &fakeDaemons{alive: true}
	c := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	ctx, cancel := context.WithCancel(context.Background())
	o := Outage{Daemons: d, Name: "kube-apiserver", Cmdline: func(int) ([]string, error) { return []string{"/x"}, nil }}
	inj := InjectorFunc(func(ctx context.Context) (string, Undo, error) {
		target, undo, err := o.Inject(ctx)
		cancel()
		return target, undo, err
	})
	_, err := Schedule{Injector: inj, Period: time.Minute, Duration: 5 * time.Minute, Hold: 30 * time.Second, Clock: c}.Run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := d.Alive(""); !ok || len(d.started) != 1 {
		t.Errorf("apiserver not started again: alive %v, starts %d", ok, len(d.started))
	}
}

func TestConfigMapRemoveUndo(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "never", Namespace: "chaos"}, Data: map[string]string{"k": "v"}}
	kc := fake.NewClientset(cm)
	_, undo, err := ConfigMapRemove(kc, "chaos", "never").Inject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().ConfigMaps("chaos").Get(context.Background(), "never", metav1.GetOptions{}); err == nil {
		t.Fatal("still there after the injection")
	}
	if err := undo(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := kc.CoreV1().ConfigMaps("chaos").Get(context.Background(), "never", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("after the undo: %v %v", got, err)
	}
	// An undo after someone else put it back is fine.
	if err := undo(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A missing ConfigMap is an error with nothing to undo.
	kc2 := fake.NewClientset()
	if _, undo, err := ConfigMapRemove(kc2, "chaos", "never").Inject(context.Background()); err == nil || undo != nil {
		t.Fatalf("missing ConfigMap: err %v, undo %v", err, undo != nil)
	}
}

func TestUserPodKillPicksTheYoungestScalingUpPod(t *testing.T) {
	c := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	now := c.Now()
	for _, tc := range []struct {
		name    string
		pods    []*corev1.Pod
		want    string
		wantErr bool
	}{
		{name: "youngest of the cold services", pods: []*corev1.Pod{
			pod("chaos", "cold-00-a", "cold-00", UserContainer, "1", now.Add(-8*time.Second), true),
			pod("chaos", "cold-01-a", "cold-01", UserContainer, "2", now.Add(-2*time.Second), false),
			pod("chaos", "steady-a", "steady", UserContainer, "3", now.Add(-time.Second), true),
			pod("chaos", "cold-02-old", "cold-02", UserContainer, "4", now.Add(-time.Hour), true),
		}, want: "cold-01-a"},
		{name: "none scaling up within the wait", pods: []*corev1.Pod{
			pod("chaos", "cold-02-old", "cold-02", UserContainer, "4", now.Add(-time.Hour), true),
		}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			for _, p := range tc.pods {
				objs = append(objs, p)
			}
			kc := fake.NewClientset(objs...)
			u := UserPodKill{Killer: Killer{Kube: kc, Component: UserContainer, Namespace: "chaos"},
				Service: func(s string) bool { return strings.HasPrefix(s, "cold-") }, Young: 10 * time.Second, Wait: 2 * time.Second, Clock: c}
			var target string
			var err error
			drive(t, c, 100*time.Millisecond, func() { target, _, err = u.Inject(context.Background()) })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tc.want == "" {
				return
			}
			if !strings.HasPrefix(target, tc.want+" (force delete)") {
				t.Errorf("target %q, want %s", target, tc.want)
			}
			if _, err := kc.CoreV1().Pods("chaos").Get(context.Background(), tc.want, metav1.GetOptions{}); err == nil {
				t.Error("the pod was not deleted")
			}
		})
	}
}

func TestAllReplicas(t *testing.T) {
	now := time.Unix(1e9, 0)
	kc := fake.NewClientset(
		pod(SystemNamespace, "activator-a", "activator", "activator", "a", now, true),
		pod(SystemNamespace, "activator-b", "activator", "activator", "b", now, true),
		pod(SystemNamespace, "autoscaler-a", "autoscaler", "autoscaler", "c", now, true))
	p := Pods{Kube: kc, Component: "activator", Rand: rand.New(rand.NewPCG(1, 1))}
	for _, tc := range []struct {
		name string
		inj  Injector
	}{
		{"kill all (force delete off the lab)", ActivatorKillAll(Killer{Kube: kc, Component: "activator"}, p)},
		{"delete all", PodDeleteAll(p)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []string{"activator-a", "activator-b"} {
				_, _ = kc.CoreV1().Pods(SystemNamespace).Create(context.Background(), pod(SystemNamespace, n, "activator", "activator", n, now, true), metav1.CreateOptions{})
			}
			target, undo, err := tc.inj.Inject(context.Background())
			if err != nil || undo != nil || !strings.HasPrefix(target, "all 2") {
				t.Fatalf("%q %v %v", target, undo != nil, err)
			}
			list, _ := kc.CoreV1().Pods(SystemNamespace).List(context.Background(), metav1.ListOptions{})
			if len(list.Items) != 1 || list.Items[0].Name != "autoscaler-a" {
				t.Errorf("left %v", list.Items)
			}
		})
	}
}

func deployment(name string, env ...corev1.EnvVar) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SystemNamespace},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: name, Env: env}}}}}}
}

func TestInjected(t *testing.T) {
	on := corev1.EnvVar{Name: faultinject.EnvVar, Value: faultinject.EnvEnabled}
	c := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC))
	existing := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: faultinject.ConfigMapName, Namespace: SystemNamespace},
		Data: map[string]string{"activator.poke-drop": "p=0.1"}}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		faults  map[string]string
		wantErr string
		// want is the ConfigMap's data after the undo (nil: none)
		want map[string]string
	}{
		{name: "written with an expiry and deleted", objs: []runtime.Object{deployment("activator", on)},
			faults: map[string]string{"activator.pod-latency": "delay=200ms,p=0.5"}},
		{name: "an existing ConfigMap is put back", objs: []runtime.Object{deployment("activator", on), existing},
			faults: map[string]string{"activator.pod-latency": "delay=200ms"}, want: existing.Data},
		{name: "refused without the deploy-time switch", objs: []runtime.Object{deployment("activator"), deployment("autoscaler", on)},
			faults: map[string]string{"activator.pod-latency": "delay=200ms"}, wantErr: "fault injection is off"},
		{name: "refused for a bad value", objs: []runtime.Object{deployment("activator", on)},
			faults: map[string]string{"activator.pod-latency": "delay=forever"}, wantErr: "delay"},
		{name: "refused for an unknown key", objs: []runtime.Object{deployment("activator", on)},
			faults: map[string]string{"activator.nope": "p=1"}, wantErr: "unknown key"},
		{name: "nothing to inject", wantErr: "no fault"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := fake.NewClientset(tc.objs...)
			target, undo, err := Injected{Kube: kc, Faults: tc.faults, Hold: time.Minute, Clock: c}.Inject(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || undo != nil {
					t.Fatalf("err = %v, undo %v; want %q and no undo", err, undo != nil, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cm, err := kc.CoreV1().ConfigMaps(SystemNamespace).Get(context.Background(), faultinject.ConfigMapName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.faults {
				if cm.Data[k] != v {
					t.Errorf("%s = %q, want %q (%s)", k, cm.Data[k], v, target)
				}
			}
			if cm.Data[faultinject.UntilKey] != "2026-01-02T15:01:30Z" {
				t.Errorf("until = %q, want the hold and the margin", cm.Data[faultinject.UntilKey])
			}
			if err := undo(context.Background()); err != nil {
				t.Fatal(err)
			}
			cm, err = kc.CoreV1().ConfigMaps(SystemNamespace).Get(context.Background(), faultinject.ConfigMapName, metav1.GetOptions{})
			switch {
			case tc.want == nil && err == nil:
				t.Errorf("ConfigMap left after the undo: %v", cm.Data)
			case tc.want != nil && (err != nil || !maps.Equal(cm.Data, tc.want)):
				t.Errorf("after the undo: %v %v, want %v", cm, err, tc.want)
			}
		})
	}
}
