package lifecycle

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	coordinationv1 "k8s.io/api/coordination/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/thaw-dev/thaw/pkg/bucket"
	"github.com/thaw-dev/thaw/pkg/wire"
)

// replica is one more autoscaler process on the harness's fake API server.
type replica struct {
	addrs  [2]string
	cancel context.CancelFunc
	done   chan error
}

// startReplica runs another process against h's clients, as pod name at ip (a loopback address of its
// own, so that the replicas share the stat port as pods do).
func (h *harness) startReplica(t *testing.T, name, ip string, port int, metricsPort ...int) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{cancel: cancel, done: make(chan error, 1)}
	maddr := ip + ":0"
	mport := 0
	if len(metricsPort) > 0 {
		mport = metricsPort[0]
		maddr = net.JoinHostPort(ip, strconv.Itoa(mport))
	}
	cfg := Config{StatsAddr: net.JoinHostPort(ip, strconv.Itoa(port)), MetricsAddr: maddr, MetricsPort: mport, Namespace: sysNS,
		PodName: name, PodIP: ip, LoggingName: "config-logging", ObservabilityName: "config-observability",
		ShutdownTimeout: 5 * time.Second, StatPort: port, allowLoopback: true}
	d := Deps{Kube: h.kube, Serving: h.serving, Networking: h.net, Dynamic: h.dyn, Prober: okProber{}}
	ready := make(chan [2]string, 1)
	go func() {
		r.done <- Run(ctx, cfg, d, ready, zaptest.NewLogger(t).Sugar().Named(name), zap.NewAtomicLevel())
	}()
	t.Cleanup(func() { r.stop(t) })
	select {
	case r.addrs = <-ready:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("replica %s ended early: %v", name, err)
	}
	return r
}

func (r *replica) stop(t *testing.T) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("replica: %v", err)
		}
		r.done <- err
	case <-time.After(15 * time.Second):
		t.Error("replica did not stop")
	}
}

// stream sends 250 concurrent requests for rev on conn once a second, as an activator reports (the
// stats of one second add up), until the returned stop is called; sends counts what was sent.
func stream(t *testing.T, conn *websocket.Conn) (stop func(), sends *atomic.Int64) {
	sends = &atomic.Int64{}
	done, finished := make(chan struct{}), make(chan struct{})
	frame := wire.MarshalMessages([]wire.StatMessage{{Key: rev,
		Stat: wire.Stat{PodName: "activator-x", AverageConcurrentRequests: 250, RequestCount: 250}}})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			if err := conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
				t.Error(err)
				return
			}
			sends.Add(1)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); <-finished }, sends
}

// freePort finds a port free on both loopback addresses.
func freePort(t *testing.T, ips ...string) int {
	for range 20 {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l2.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every address")
	return 0
}

// The activator's websocket lands on a replica that holds no bucket (upstream's HA failure with Thaw
// before buckets): the stat reaches the holder through the peer link and the PA gets its desiredScale.
// When the holder stops, the other replica takes the bucket over without a restart and decides from
// the windows it kept (a stat sent only before the hand-over still counts).
func TestStatReachesTheHolderAndHandsOver(t *testing.T) {
	ctx := context.Background()
	const ipA, ipB = "127.0.0.2", "127.0.0.3"
	h := start(t, map[string]string{"lease-duration": "2s", "renew-deadline": "1s", "retry-period": "200ms"})
	h.stop(t) // only its clients are used: replicas a and b run on the same fake API server
	port := freePort(t, ipA, ipB)
	a := h.startReplica(t, "autoscaler-a", ipA, port)
	eventually(t, "a holds the bucket", func() bool { return h.holder(t) == bucket.Identity("autoscaler-a", ipA) })
	b := h.startReplica(t, "autoscaler-b", ipB, port)
	// The autoscaler Service's endpoints: both replicas.
	if _, err := h.kube.DiscoveryV1().EndpointSlices(sysNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "autoscaler-x1", Namespace: sysNS, Labels: map[string]string{discoveryv1.LabelServiceName: "autoscaler"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ipA}}, {Addresses: []string{ipB}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(port))}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The holder points the bucket Service at itself for upstream's forwarders.
	eventually(t, "bucket EndpointSlice", func() bool {
		es, err := h.kube.DiscoveryV1().EndpointSlices(sysNS).Get(ctx, bucket.Name(0, 1), metav1.GetOptions{})
		return err == nil && len(es.Endpoints) == 1 && es.Endpoints[0].Addresses[0] == ipA
	})
	h.sksFor(t, ctx, rev.Name)
	eventually(t, "Metric status", func() bool {
		m, err := h.serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && m.Status.GetCondition("Ready") != nil
	})

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+b.addrs[0]+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	desired := func() int32 {
		pa, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		if err != nil || pa.Status.DesiredScale == nil {
			return -2
		}
		return *pa.Status.DesiredScale
	}
	// 250 concurrent against the default target 100 at 70%: 4 pods, decided by a from b's stats.
	stop, sends := stream(t, conn)
	eventually(t, "desiredScale 4 from stats sent to the replica without the bucket", func() bool { return desired() == 4 })
	// A few more seconds of stats, so that b's window holds some whatever the moment its collection
	// appeared (a stat that arrives first is dropped as of an unknown revision).
	n := sends.Load()
	eventually(t, "three more stats", func() bool { return sends.Load() >= n+3 })
	stop()

	// a goes (gracefully: it releases the Lease); b takes the bucket and, with the stats it recorded,
	// keeps wanting 4 without any new stat.
	a.stop(t)
	eventually(t, "b holds the bucket", func() bool { return h.holder(t) == bucket.Identity("autoscaler-b", ipB) })
	eventually(t, "bucket EndpointSlice moved to b", func() bool {
		es, err := h.kube.DiscoveryV1().EndpointSlices(sysNS).Get(ctx, bucket.Name(0, 1), metav1.GetOptions{})
		return err == nil && len(es.Endpoints) == 1 && es.Endpoints[0].Addresses[0] == ipB
	})
	// The PA is written by b now: make it forget a's value, then see b's decision.
	pa, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa.Status.DesiredScale = ptr.To(int32(-1))
	if _, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).UpdateStatus(ctx, pa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The stream stopped with a, so the window's average decays; what matters is that b has one: a
	// replica without the stats finds no data and makes no decision (desiredScale stays -1).
	eventually(t, "b decides from the kept window", func() bool { return desired() >= 1 })
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("unreachable")
	}
}

// The holder dies without releasing its Lease (SIGKILL): the stats the activator sent to it alone
// reached the other replica through the peer link, so when the Lease expires and that replica takes
// the bucket, it decides from them at once.
func TestHandOverAfterKillIsWarm(t *testing.T) {
	ctx := context.Background()
	const ipA, ipB = "127.0.0.4", "127.0.0.5"
	h := start(t, map[string]string{"lease-duration": "2s", "renew-deadline": "1s", "retry-period": "200ms"})
	h.stop(t)
	port := freePort(t, ipA, ipB)
	idA := bucket.Identity("autoscaler-a", ipA)
	var dead atomic.Bool
	deadHolder := func(l *coordinationv1.Lease) error {
		if dead.Load() && (l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == idA) {
			return errors.New("the holder is dead")
		}
		return nil
	}
	h.leaseUpdate.Store(&deadHolder)
	a := h.startReplica(t, "autoscaler-a", ipA, port)
	eventually(t, "a holds the bucket", func() bool { return h.holder(t) == idA })
	b := h.startReplica(t, "autoscaler-b", ipB, port)
	_ = b
	if _, err := h.kube.DiscoveryV1().EndpointSlices(sysNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "autoscaler-x1", Namespace: sysNS, Labels: map[string]string{discoveryv1.LabelServiceName: "autoscaler"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ipA}}, {Addresses: []string{ipB}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.sksFor(t, ctx, rev.Name)
	eventually(t, "Metric status", func() bool {
		m, err := h.serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && m.Status.GetCondition("Ready") != nil
	})
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+a.addrs[0]+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	desired := func() int32 {
		pa, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		if err != nil || pa.Status.DesiredScale == nil {
			return -2
		}
		return *pa.Status.DesiredScale
	}
	stop, sends := stream(t, conn)
	eventually(t, "a decides 4", func() bool { return desired() == 4 })
	n := sends.Load()
	eventually(t, "three more stats", func() bool { return sends.Load() >= n+3 })
	stop()
	conn.Close()

	// a dies: its Lease release never reaches the API server, so the Lease stays a's until it expires.
	dead.Store(true)
	a.stop(t)
	if h.holder(t) != idA {
		t.Fatalf("the Lease was released: holder %q", h.holder(t))
	}
	pa, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa.Status.DesiredScale = ptr.To(int32(-1))
	if _, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).UpdateStatus(ctx, pa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b takes the expired bucket", func() bool { return h.holder(t) == bucket.Identity("autoscaler-b", ipB) })
	eventually(t, "b decides from the stats a forwarded", func() bool { return desired() >= 1 })
}

// A holder killed and restarted in place keeps its identity and retakes its own Lease at once (as a
// container restarted by the kubelet does); before campaigning it takes the other replica's windows,
// so its first decisions come from the load it had, not from empty windows.
func TestRestartInPlaceStartsWarm(t *testing.T) {
	ctx := context.Background()
	const ipA, ipB = "127.0.0.6", "127.0.0.7"
	h := start(t, map[string]string{"lease-duration": "15s", "renew-deadline": "10s", "retry-period": "200ms"})
	h.stop(t)
	port, mport := freePort(t, ipA, ipB), freePort(t, ipA, ipB)
	idA := bucket.Identity("autoscaler-a", ipA)
	var dead atomic.Bool
	deadHolder := func(l *coordinationv1.Lease) error {
		if dead.Load() && (l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "") {
			return errors.New("the holder is dead")
		}
		return nil
	}
	h.leaseUpdate.Store(&deadHolder)
	a := h.startReplica(t, "autoscaler-a", ipA, port, mport)
	eventually(t, "a holds the bucket", func() bool { return h.holder(t) == idA })
	h.startReplica(t, "autoscaler-b", ipB, port, mport)
	if _, err := h.kube.DiscoveryV1().EndpointSlices(sysNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "autoscaler-x1", Namespace: sysNS, Labels: map[string]string{discoveryv1.LabelServiceName: "autoscaler"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ipA}}, {Addresses: []string{ipB}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.sksFor(t, ctx, rev.Name)
	eventually(t, "Metric status", func() bool {
		m, err := h.serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && m.Status.GetCondition("Ready") != nil
	})
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+a.addrs[0]+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	desired := func() int32 {
		pa, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		if err != nil || pa.Status.DesiredScale == nil {
			return -2
		}
		return *pa.Status.DesiredScale
	}
	stop, sends := stream(t, conn)
	eventually(t, "a decides 4", func() bool { return desired() == 4 })
	n := sends.Load()
	eventually(t, "three more stats", func() bool { return sends.Load() >= n+3 })
	stop()
	conn.Close()

	dead.Store(true) // a dies: no release
	a.stop(t)
	pa, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa.Status.DesiredScale = ptr.To(int32(-1))
	if _, err := h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).UpdateStatus(ctx, pa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dead.Store(false)
	// The same pod, restarted: it renews its own Lease long before it would expire (15 s).
	restarted := time.Now()
	h.startReplica(t, "autoscaler-a", ipA, port, mport)
	eventually(t, "the restarted a decides from b's windows", func() bool { return desired() >= 1 })
	if d := time.Since(restarted); d > 10*time.Second {
		t.Fatalf("decided %v after the restart: the Lease expired first", d)
	}
	if h.holder(t) != idA {
		t.Fatalf("holder %q, want the restarted a", h.holder(t))
	}
}
