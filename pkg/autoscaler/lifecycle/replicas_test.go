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

	"github.com/thaw-dev/thaw/pkg/autoscaler/bucket"
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

// pair is two replicas, a and b, on one fake API server: a holds the single bucket, both are behind
// the autoscaler Service, and rev has its SKS and Metric.
type pair struct {
	h     *harness
	a, b  *replica
	idA   string
	ipA   string
	ipB   string
	port  int
	mport int
	dead  atomic.Bool // a is dead: its Lease is neither renewed nor released
}

func newPair(t *testing.T, ipA, ipB, leaseDuration string) *pair {
	t.Helper()
	ctx := context.Background()
	p := &pair{ipA: ipA, ipB: ipB, idA: bucket.Identity("autoscaler-a", ipA)}
	p.h = start(t, map[string]string{"lease-duration": leaseDuration, "renew-deadline": "1s", "retry-period": "200ms"})
	p.h.stop(t) // only its clients are used
	p.port, p.mport = freePort(t, ipA, ipB), freePort(t, ipA, ipB)
	deadHolder := func(l *coordinationv1.Lease) error {
		if p.dead.Load() && (l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == p.idA) {
			return errors.New("the holder is dead")
		}
		return nil
	}
	p.h.leaseUpdate.Store(&deadHolder)
	p.a = p.h.startReplica(t, "autoscaler-a", ipA, p.port, p.mport)
	eventually(t, "a holds the bucket", func() bool { return p.h.holder(t) == p.idA })
	p.b = p.h.startReplica(t, "autoscaler-b", ipB, p.port, p.mport)
	if _, err := p.h.kube.DiscoveryV1().EndpointSlices(sysNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "autoscaler-x1", Namespace: sysNS, Labels: map[string]string{discoveryv1.LabelServiceName: "autoscaler"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ipA}}, {Addresses: []string{ipB}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.h.sksFor(t, ctx, rev.Name)
	eventually(t, "Metric status", func() bool {
		m, err := p.h.serving.AutoscalingV1alpha1().Metrics(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
		return err == nil && m.Status.GetCondition("Ready") != nil
	})
	return p
}

// desired is rev's desiredScale, -2 when unset.
func (p *pair) desired() int32 {
	pa, err := p.h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(context.Background(), rev.Name, metav1.GetOptions{})
	if err != nil || pa.Status.DesiredScale == nil {
		return -2
	}
	return *pa.Status.DesiredScale
}

// load streams 250 concurrent requests to the replica at addr until a decides 4 pods (the default
// target 100 at 70%), then three seconds more, so that every replica's window holds some whatever the
// moment its collection appeared (a stat that arrives first is dropped as of an unknown revision).
func (p *pair) load(t *testing.T, addr string) {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop, sends := stream(t, conn)
	defer stop()
	eventually(t, "desiredScale 4", func() bool { return p.desired() == 4 })
	n := sends.Load()
	eventually(t, "three more stats", func() bool { return sends.Load() >= n+3 })
}

// forget makes the PA forget the decision, so that the next holder's own shows.
func (p *pair) forget(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pa, err := p.h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).Get(ctx, rev.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa.Status.DesiredScale = ptr.To(int32(-1))
	if _, err := p.h.serving.AutoscalingV1alpha1().PodAutoscalers(rev.Namespace).UpdateStatus(ctx, pa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// The activator's websocket lands on a replica that holds no bucket (upstream's HA failure with Thaw
// before buckets): its stats reach the holder through the peer link and the PA gets its desiredScale.
// When the holder stops, the other replica takes the bucket over without a restart, points the bucket
// Service at itself, and decides from the windows it kept.
func TestStatReachesTheHolderAndHandsOver(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, "127.0.0.2", "127.0.0.3", "2s")
	eventually(t, "bucket EndpointSlice at a", func() bool {
		es, err := p.h.kube.DiscoveryV1().EndpointSlices(sysNS).Get(ctx, bucket.Name(0, 1), metav1.GetOptions{})
		return err == nil && len(es.Endpoints) == 1 && es.Endpoints[0].Addresses[0] == p.ipA
	})
	p.load(t, p.b.addrs[0])
	p.a.stop(t) // gracefully: the Lease is released
	eventually(t, "b holds the bucket", func() bool { return p.h.holder(t) == bucket.Identity("autoscaler-b", p.ipB) })
	eventually(t, "bucket EndpointSlice moved to b", func() bool {
		es, err := p.h.kube.DiscoveryV1().EndpointSlices(sysNS).Get(ctx, bucket.Name(0, 1), metav1.GetOptions{})
		return err == nil && len(es.Endpoints) == 1 && es.Endpoints[0].Addresses[0] == p.ipB
	})
	p.forget(t)
	// The stream stopped, so the window's average decays; what matters is that b has one: a replica
	// without the stats finds no data and makes no decision (desiredScale stays -1).
	eventually(t, "b decides from the kept window", func() bool { return p.desired() >= 1 })
}

// The holder dies without releasing its Lease (SIGKILL): the stats the activator sent to it alone
// reached the other replica through the peer link, so when the Lease expires and that replica takes
// the bucket, it decides from them at once.
func TestHandOverAfterKillIsWarm(t *testing.T) {
	p := newPair(t, "127.0.0.4", "127.0.0.5", "2s")
	p.load(t, p.a.addrs[0])
	p.dead.Store(true)
	p.a.stop(t)
	if p.h.holder(t) != p.idA {
		t.Fatalf("the Lease was released: holder %q", p.h.holder(t))
	}
	p.forget(t)
	eventually(t, "b takes the expired bucket", func() bool { return p.h.holder(t) == bucket.Identity("autoscaler-b", p.ipB) })
	eventually(t, "b decides from the stats a forwarded", func() bool { return p.desired() >= 1 })
}

// A holder killed and restarted in place keeps its identity and retakes its own Lease at once (as a
// container restarted by the kubelet does); before campaigning it takes the other replica's windows,
// so its first decisions come from the load it had, not from empty windows.
func TestRestartInPlaceStartsWarm(t *testing.T) {
	p := newPair(t, "127.0.0.6", "127.0.0.7", "15s")
	p.load(t, p.a.addrs[0])
	p.dead.Store(true) // a dies: no release
	p.a.stop(t)
	p.forget(t)
	p.dead.Store(false)
	// The same pod, restarted: it renews its own Lease long before it would expire (15 s).
	restarted := time.Now()
	p.h.startReplica(t, "autoscaler-a", p.ipA, p.port, p.mport)
	eventually(t, "the restarted a decides from b's windows", func() bool { return p.desired() >= 1 })
	if d := time.Since(restarted); d > 10*time.Second {
		t.Fatalf("decided %v after the restart: the Lease expired first", d)
	}
	if p.h.holder(t) != p.idA {
		t.Fatalf("holder %q, want the restarted a", p.h.holder(t))
	}
}
