//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	watchtools "k8s.io/client-go/tools/watch"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	servingclient "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/thaw-dev/thaw/pkg/lab/ksvc"
	"github.com/thaw-dev/thaw/pkg/lab/stack"
)

// useComponents swaps in the activator and autoscaler THAW_E2E_COMPONENTS selects and waits for the
// autoscaler to lead; upstream's are put back when the test ends.
func useComponents(t *testing.T) string {
	t.Helper()
	which, im := components(t)
	t.Cleanup(func() {
		up := stack.UpstreamImages()
		if err := lab.stack.Swap(context.Background(), up); err != nil {
			t.Errorf("restoring upstream's components: %v", err)
		} else if err := waitAutoscalerLeads(context.Background(), up["autoscaler"]); err != nil {
			t.Error(err)
		}
	})
	swapTo(t, im["autoscaler"], im)
	return which
}

// swapTo swaps to im and waits until an autoscaler running image leads.
func swapTo(t *testing.T, image string, im map[string]string) {
	t.Helper()
	t0 := time.Now()
	ctx := context.Background()
	if err := lab.stack.Swap(ctx, im); err != nil {
		t.Fatal(err)
	}
	if err := waitAutoscalerLeads(ctx, image); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s swapped in and leading in %s", image, time.Since(t0).Round(time.Millisecond))
}

func servingClient(t *testing.T) *servingclient.Clientset {
	t.Helper()
	c, err := servingclient.NewForConfig(lab.client.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// failure is one failed request of a timedLoad.
type failure struct {
	at  time.Time
	msg string
}

// timedLoad keeps workers requests in flight and remembers when each failure happened, so failures
// during an outage can be told from the others.
type timedLoad struct {
	host, path string
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	mu         sync.Mutex
	ok         int
	fails      []failure
	workers    []context.CancelFunc
}

func startTimedLoad(host, path string, workers int) *timedLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &timedLoad{host: host, path: path, ctx: ctx, cancel: cancel}
	l.add(workers)
	return l
}

// add starts n more workers.
func (l *timedLoad) add(n int) {
	c := ksvc.NewClient(lab.stack.IngressAddr(), 60*time.Second)
	for range n {
		ctx, cancel := context.WithCancel(l.ctx)
		l.mu.Lock()
		l.workers = append(l.workers, cancel)
		l.mu.Unlock()
		l.wg.Go(func() {
			for ctx.Err() == nil {
				// A request in flight finishes even when its worker is stopped.
				resp, err := c.Get(context.WithoutCancel(ctx), l.host, l.path)
				l.mu.Lock()
				if err == nil && resp.Status == 200 {
					l.ok++
				} else {
					msg := fmt.Sprint(err)
					if err == nil {
						msg = fmt.Sprintf("%d %.100s", resp.Status, strings.TrimSpace(resp.Body))
					}
					l.fails = append(l.fails, failure{time.Now(), msg})
				}
				l.mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
}

// remove stops n workers once their request in flight ends.
func (l *timedLoad) remove(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ; n > 0 && len(l.workers) > 0; n-- {
		l.workers[len(l.workers)-1]()
		l.workers = l.workers[:len(l.workers)-1]
	}
}

func (l *timedLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// split counts the failures inside [from, to] and outside it.
func (l *timedLoad) split(from, to time.Time) (ok int, in, out []failure) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.fails {
		if !f.at.Before(from) && !f.at.After(to) {
			in = append(in, f)
		} else {
			out = append(out, f)
		}
	}
	return l.ok, in, out
}

// watchFunc adapts a typed Watch call to the RetryWatcher.
type watchFunc func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)

func (f watchFunc) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return f(ctx, o)
}

// relisted marks the event follow makes from a fresh List after its watch ended.
const relisted watch.EventType = "RELISTED"

// follow calls fn for every change from resourceVersion rv on until ctx ends, from one goroutine. The
// RetryWatcher resumes from the last resourceVersion it saw when the watch breaks; after an apiserver
// restart that version is older than the new watch cache (410 Gone), so follow then lists the object
// again, passes it as a relisted event, and watches on from there. The returned channel is closed once
// fn will not be called again.
func follow(ctx context.Context, rv string, get func(context.Context) (runtime.Object, string, error), w watchFunc, fn func(watch.Event)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			rw, err := watchtools.NewRetryWatcherWithContext(ctx, rv, w)
			if err != nil {
				return
			}
		events:
			for {
				select {
				case <-ctx.Done():
					rw.Stop()
					return
				case ev, ok := <-rw.ResultChan():
					if !ok || ev.Type == watch.Error {
						break events
					}
					if ev.Type != watch.Bookmark {
						fn(ev)
					}
				}
			}
			rw.Stop()
			for ctx.Err() == nil {
				// Not in a tight loop if the new watch fails at once.
				select {
				case <-ctx.Done():
					return
				case <-time.After(250 * time.Millisecond):
				}
				obj, v, err := get(ctx)
				if err == nil {
					fn(watch.Event{Type: relisted, Object: obj})
					rv = v
					break
				}
			}
		}
	}()
	return done
}

// replicaPoint is one change of a Deployment seen by a watch.
type replicaPoint struct {
	at          time.Time
	spec, ready int32
	generation  int64
	relisted    bool
}

// replicaLog records every change of a Deployment's spec.replicas and ready replicas.
type replicaLog struct {
	mu     sync.Mutex
	points []replicaPoint
}

// watchReplicas follows the Deployment name in ns until ctx ends.
func watchReplicas(ctx context.Context, t *testing.T, name string) *replicaLog {
	t.Helper()
	kc := lab.client.Kube.AppsV1().Deployments(ns)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	// A List, not a Get: its resourceVersion is the store's current one, which the new watch cache
	// of a restarted apiserver serves; an object's own may be older than the cache and answer 410.
	get := func(ctx context.Context) (runtime.Object, string, error) {
		l, err := kc.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, "", err
		}
		if len(l.Items) != 1 {
			return nil, "", fmt.Errorf("%d deployments named %s", len(l.Items), name)
		}
		return &l.Items[0], l.ResourceVersion, nil
	}
	obj, rv, err := get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &replicaLog{}
	add := func(ev watch.Event) {
		d, ok := ev.Object.(*appsv1.Deployment)
		if !ok {
			return
		}
		r.mu.Lock()
		r.points = append(r.points, replicaPoint{time.Now(), deref32(d.Spec.Replicas), d.Status.ReadyReplicas,
			d.Generation, ev.Type == relisted})
		r.mu.Unlock()
	}
	add(watch.Event{Type: watch.Added, Object: obj})
	follow(ctx, rv, get, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.FieldSelector = sel
		return kc.Watch(ctx, o)
	}, add)
	return r
}

// unseen counts the spec changes no event showed: every spec write bumps the generation, so a jump
// of more than one between two points (across a relist) hides writes.
func (r *replicaLog) unseen() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for i := 1; i < len(r.points); i++ {
		n += max(0, r.points[i].generation-r.points[i-1].generation-1)
	}
	return n
}

// minSpec is the lowest spec.replicas in effect at any moment from since on (the value in effect at
// since included).
func (r *replicaLog) minSpec(since time.Time) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := int32(-1)
	for i, p := range r.points {
		if p.at.Before(since) && i+1 < len(r.points) && !r.points[i+1].at.After(since) {
			continue // superseded before since
		}
		if m < 0 || p.spec < m {
			m = p.spec
		}
	}
	return m
}

func (r *replicaLog) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	t0 := r.points[0].at
	for _, p := range r.points {
		mark := ""
		if p.relisted {
			mark = "(relisted)"
		}
		fmt.Fprintf(&b, " %s:%d/%d%s", p.at.Sub(t0).Round(100*time.Millisecond), p.spec, p.ready, mark)
	}
	return "[t:spec/ready]" + b.String()
}

// paWrite is one change of a PodAutoscaler seen by a watch.
type paWrite struct {
	at              time.Time
	desired, actual int32
	statusChanged   bool
}

// paLog records every change of a PodAutoscaler.
type paLog struct {
	mu     sync.Mutex
	writes []paWrite
	// relists are when the watch had to start over: writes just before one may be missing.
	relists []time.Time
}

func scaleOf(p *int32) int32 {
	if p == nil {
		return -2 // unset
	}
	return *p
}

// watchPA follows the PodAutoscaler name in ns until ctx ends.
func watchPA(ctx context.Context, t *testing.T, sc *servingclient.Clientset, name string) *paLog {
	t.Helper()
	pc := sc.AutoscalingV1alpha1().PodAutoscalers(ns)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	get := func(ctx context.Context) (runtime.Object, string, error) { // a List, as in watchReplicas
		l, err := pc.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, "", err
		}
		if len(l.Items) != 1 {
			return nil, "", fmt.Errorf("%d PodAutoscalers named %s", len(l.Items), name)
		}
		return &l.Items[0], l.ResourceVersion, nil
	}
	obj, rv, err := get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := &paLog{}
	prev := obj.(*autoscalingv1alpha1.PodAutoscaler).Status.DeepCopy()
	follow(ctx, rv, get, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.FieldSelector = sel
		return pc.Watch(ctx, o)
	}, func(ev watch.Event) {
		pa, ok := ev.Object.(*autoscalingv1alpha1.PodAutoscaler)
		if !ok || (ev.Type != watch.Modified && ev.Type != relisted) {
			return
		}
		changed := !equality.Semantic.DeepEqual(prev, &pa.Status)
		prev = pa.Status.DeepCopy()
		if ev.Type == relisted {
			l.mu.Lock()
			l.relists = append(l.relists, time.Now())
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		l.writes = append(l.writes, paWrite{time.Now(), scaleOf(pa.Status.DesiredScale), scaleOf(pa.Status.ActualScale), changed})
		l.mu.Unlock()
	})
	return l
}

// since returns the number of writes from t0 on, how many changed the status, and their series.
func (l *paLog) since(t0 time.Time) (all, status int, series string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, w := range l.writes {
		if w.at.Before(t0) {
			continue
		}
		all++
		mark := ""
		if w.statusChanged {
			status++
			mark = "*"
		}
		fmt.Fprintf(&b, " %s:%d/%d%s", w.at.Sub(t0).Round(100*time.Millisecond), w.desired, w.actual, mark)
	}
	for _, r := range l.relists {
		if !r.Before(t0) {
			fmt.Fprintf(&b, " (relisted at %s: writes may be missing)", r.Sub(t0).Round(100*time.Millisecond))
		}
	}
	return all, status, "[t:desired/actual, * = status changed]" + b.String()
}

// podRestarts maps the live pods of a knative-serving app to their containers' restart counts.
func podRestarts(ctx context.Context, app string) (map[string]int32, error) {
	pods, err := lab.client.Kube.CoreV1().Pods("knative-serving").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	out := map[string]int32{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		var n int32
		for _, c := range p.Status.ContainerStatuses {
			n += c.RestartCount
		}
		out[p.Name] = n
	}
	return out, nil
}

// leader returns the autoscaler pod holding the Lease.
func leader(ctx context.Context) (string, error) {
	l, err := lab.client.Kube.CoordinationV1().Leases("knative-serving").Get(ctx, "autoscaler-bucket-00-of-01", getOpts())
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", fmt.Errorf("lease has no holder")
	}
	name, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
	return name, nil
}

// podLogLines returns the lines of a knative-serving pod's log since t0 that contain substr.
func podLogLines(ctx context.Context, pod string, since time.Time, substr string) ([]string, error) {
	b, err := lab.client.Kube.CoreV1().Pods("knative-serving").GetLogs(pod, &corev1.PodLogOptions{
		SinceTime: &metav1.Time{Time: since}}).DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ln := range strings.Split(string(b), "\n") {
		if strings.Contains(ln, substr) {
			out = append(out, ln)
		}
	}
	return out, nil
}
