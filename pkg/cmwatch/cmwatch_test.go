package cmwatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const ns = "knative-serving"

func cm(namespace, name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: data}
}

// limit is a parsed test config: "limit" must be a positive integer; the default is 1.
type limit struct{ N int }

func parseLimit(data map[string]string) (*limit, error) {
	l := &limit{N: 1}
	if v, ok := data["limit"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("limit: %q is not a positive integer", v)
		}
		l.N = n
	}
	return l, nil
}

// events records what a Funcs handler saw, in order.
type events struct {
	mu  sync.Mutex
	got []string
	ch  chan struct{}
}

func newEvents() *events { return &events{ch: make(chan struct{}, 100)} }

func (e *events) add(s string) {
	e.mu.Lock()
	e.got = append(e.got, s)
	e.mu.Unlock()
	e.ch <- struct{}{}
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

// TestWatch runs one watch of three ConfigMaps: a Store, a Funcs that reverts on delete and one that
// keeps its last values. Each sees the cluster's value before Watch returns, its own updates only,
// invalid values cost one log line and change nothing, and deletions do what each asked.
func TestWatch(t *testing.T) {
	client := fake.NewSimpleClientset(
		cm(ns, "config-limit", map[string]string{"limit": "5"}),
		cm(ns, "config-applied", map[string]string{"v": "a"}),
		cm("elsewhere", "config-limit", map[string]string{"limit": "77"}),
		cm(ns, "config-decoy", map[string]string{"limit": "99"}),
	)
	core, logs := observer.New(zapcore.InfoLevel)
	store, err := NewStore("config-limit", parseLimit, zap.New(core).Sugar())
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan *limit, 100)
	store.OnChange(func(l *limit) { changed <- l })
	applied, kept := newEvents(), newEvents()
	funcs := func(name string, ev *events, onDelete bool) Funcs {
		f := Funcs{ConfigMap: name, Update: func(c *corev1.ConfigMap) error {
			if c.Data["v"] == "bad" {
				return errors.New("bad value") // the handler's own log line is its business
			}
			ev.add("update " + c.Data["v"])
			return nil
		}}
		if onDelete {
			f.Delete = func() { ev.add("delete") }
		}
		return f
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := Watch(ctx, ctx, client, ns, store, funcs("config-applied", applied, true), funcs("config-kept", kept, false)); err != nil {
		t.Fatal(err)
	}
	// Initial state: synced before Watch returned.
	if got := store.Load().N; got != 5 {
		t.Fatalf("after Watch the store holds %d, want the cluster's 5", got)
	}
	if got := applied.list(); len(got) != 1 || got[0] != "update a" {
		t.Fatalf("config-applied saw %v before Watch returned, want [update a]", got)
	}
	if got := kept.list(); len(got) != 0 {
		t.Fatalf("config-kept (absent) saw %v, want nothing", got)
	}
	// One list per ConfigMap, each scoped to its name in the namespace.
	lists := map[string]bool{}
	for _, a := range client.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok {
			fs := l.GetListRestrictions().Fields.String()
			if l.GetNamespace() != ns || !strings.HasPrefix(fs, "metadata.name=") {
				t.Fatalf("list in %q with field selector %q: not scoped to one ConfigMap", l.GetNamespace(), fs)
			}
			lists[strings.TrimPrefix(fs, "metadata.name=")] = true
		}
	}
	if len(lists) != 3 || !lists["config-limit"] || !lists["config-applied"] || !lists["config-kept"] {
		t.Fatalf("listed %v, want the three watched ConfigMaps", lists)
	}

	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s seen", what)
		}
	}
	waitLimit := func() *limit {
		t.Helper()
		select {
		case l := <-changed:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no store change seen")
			return nil
		}
	}
	<-changed // the initial add
	<-applied.ch
	cms := client.CoreV1().ConfigMaps(ns)
	// Invalid, then valid: the invalid one logs one line and changes nothing, the valid one lands.
	before := logs.FilterLevelExact(zapcore.ErrorLevel).Len()
	if _, err := cms.Update(ctx, cm(ns, "config-limit", map[string]string{"limit": "-1"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Update(ctx, cm(ns, "config-limit", map[string]string{"limit": "7"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if l := waitLimit(); l.N != 7 {
		t.Fatalf("after invalid+valid updates: %d, want 7", l.N)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len() - before; n != 1 {
		t.Fatalf("%d error lines for one invalid update, want 1", n)
	}
	// Updates of another ConfigMap, or of the same name elsewhere, reach no handler.
	if _, err := cms.Update(ctx, cm(ns, "config-decoy", map[string]string{"limit": "98"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().ConfigMaps("elsewhere").Update(ctx, cm("elsewhere", "config-limit", map[string]string{"limit": "78"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A handler that refuses a value is still fed the next one.
	for _, v := range []string{"bad", "b"} {
		if _, err := cms.Update(ctx, cm(ns, "config-applied", map[string]string{"v": v}), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	wait(applied.ch, "config-applied update")
	if _, err := cms.Create(ctx, cm(ns, "config-kept", map[string]string{"v": "k"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait(kept.ch, "config-kept add")

	// Deletions: the store reverts to its defaults, Delete runs, a nil Delete keeps the last values.
	for _, name := range []string{"config-limit", "config-applied", "config-kept"} {
		if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if l := waitLimit(); l.N != 1 || store.Load().N != 1 {
		t.Fatalf("after delete the store holds %d, want the default 1", store.Load().N)
	}
	wait(applied.ch, "config-applied delete")
	if got, want := strings.Join(applied.list(), ","), "update a,update b,delete"; got != want {
		t.Fatalf("config-applied saw %s, want %s", got, want)
	}
	// The sentinel: an update after config-kept's deletion arrives, so the deletion has been handled.
	if _, err := cms.Create(ctx, cm(ns, "config-kept", map[string]string{"v": "again"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait(kept.ch, "config-kept re-add")
	if got, want := strings.Join(kept.list(), ","), "update k,update again"; got != want {
		t.Fatalf("config-kept saw %s, want %s (no delete call)", got, want)
	}
	if len(changed) != 0 {
		t.Fatalf("%d store changes from ConfigMaps it does not own", len(changed))
	}
}

// forbidden is a client that refuses to list ConfigMaps (as without RBAC), so none ever syncs; each
// list attempt is signalled on listed, if given, without blocking.
func forbidden(listed chan<- struct{}) *fake.Clientset {
	client := fake.NewSimpleClientset()
	client.PrependReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		select {
		case listed <- struct{}{}:
		default:
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "", errors.New("no RBAC"))
	})
	return client
}

func TestWatchRefuses(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	a := Funcs{ConfigMap: "config-a", Update: func(*corev1.ConfigMap) error { return nil }}
	b := Funcs{ConfigMap: "config-b", Update: func(*corev1.ConfigMap) error { return nil }}
	for _, tc := range []struct {
		name      string
		wait, run context.Context
		hs        []Handler
		want      string
	}{
		{"two handlers of one ConfigMap", context.Background(), context.Background(), []Handler{a, b, a}, "config-a has two handlers"},
		{"wait ended before sync", cancelled, context.Background(), []Handler{a, b}, "config-a, config-b not synced"},
		{"run ended before sync", context.Background(), cancelled, []Handler{b}, "config-b not synced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Watch(tc.wait, tc.run, forbidden(nil), ns, tc.hs...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Watch: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestWatchGivesUp: a ConfigMap the API server refuses to list never syncs; Watch returns once wait
// ends, naming it, and stops its informers.
func TestWatchGivesUp(t *testing.T) {
	listed := make(chan struct{}, 1)
	client := forbidden(listed)
	wait, giveUp := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(wait, context.Background(), client, ns, Funcs{ConfigMap: "config-x", Update: func(*corev1.ConfigMap) error { return nil }})
	}()
	<-listed
	giveUp()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "config-x not synced") || !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch: %v, want context.Canceled naming config-x", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return once wait ended")
	}
}
