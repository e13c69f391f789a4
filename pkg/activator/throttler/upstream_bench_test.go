//go:build upstreambench

// Side-by-side with upstream's activator Throttler in the same run:
//
//	go test -tags upstreambench -run XXX -bench . ./pkg/activator/throttler
//
// Kept behind a tag because upstream's Throttler needs fake informers and
// clientsets, which make the test binary much slower to build.
package throttler

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	netcfg "knative.dev/networking/pkg/config"
	fakekubeclient "knative.dev/pkg/client/injection/kube/client/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/core/v1/endpoints/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/core/v1/service/fake"
	rtesting "knative.dev/pkg/reconciler/testing"
	upnet "knative.dev/serving/pkg/activator/net"
	"knative.dev/serving/pkg/apis/serving"
	v1 "knative.dev/serving/pkg/apis/serving/v1"
	fakerevisioninformer "knative.dev/serving/pkg/client/injection/informers/serving/v1/revision/fake"
	"knative.dev/serving/pkg/networking"
)

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no probing in benchmarks")
}

// newUpstreamThrottler returns upstream's Throttler for rev with CC cc and
// n ready pods, fed through fake informers; mesh mode "disabled" trusts
// Ready addresses without probing.
func newUpstreamThrottler(b *testing.B, cc, n int) *upnet.Throttler {
	ctx, cancel, informers := rtesting.SetupFakeContextWithCancel(b)
	wait, err := rtesting.RunAndSyncInformers(ctx, informers...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); wait() })

	r := &v1.Revision{
		ObjectMeta: metav1.ObjectMeta{Namespace: rev.Namespace, Name: rev.Name},
		Spec:       v1.RevisionSpec{ContainerConcurrency: ptr.To(int64(cc))},
	}
	if err := fakerevisioninformer.Get(ctx).Informer().GetIndexer().Add(r); err != nil {
		b.Fatal(err)
	}
	th := upnet.NewThrottler(ctx, "10.0.0.1")
	go th.Run(ctx, failingTransport{}, false, netcfg.MeshCompatibilityModeDisabled)

	ss := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "http", Port: 8012}}}
	for i := range n {
		ss.Addresses = append(ss.Addresses, corev1.EndpointAddress{IP: fmt.Sprintf("10.1.0.%d", i+1)})
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: rev.Namespace, Name: rev.Name + "-private",
			Labels: map[string]string{
				serving.RevisionUID:       "uid",
				serving.RevisionLabelKey:  rev.Name,
				networking.ServiceTypeKey: string(networking.ServiceTypePrivate),
			},
		},
		Subsets: []corev1.EndpointSubset{ss},
	}
	if _, err := fakekubeclient.Get(ctx).CoreV1().Endpoints(rev.Namespace).Create(ctx, ep, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	// Wait until the pods are routable.
	for {
		tctx, tcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := th.Try(tctx, rev, func(string, bool) error { return nil })
		tcancel()
		if err == nil {
			return th
		}
		if ctx.Err() != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpstreamThrottlerTry(b *testing.B) {
	noop := func(string, bool) error { return nil }
	b.Run("sequential", func(b *testing.B) {
		th := newUpstreamThrottler(b, 10, 10)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := th.Try(ctx, rev, noop); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range benchCases {
		b.Run(fmt.Sprintf("parallel/cc=%d/p=%d", bc.cc, bc.parallelism), func(b *testing.B) {
			th := newUpstreamThrottler(b, bc.cc, 10)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(bc.parallelism)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := th.Try(ctx, rev, noop); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
