package runner

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// TestWaitNamespaceGone: a namespace left terminating by the last run is waited out (its services,
// still listed, must not pass for the new run's); an absent or live one is fine at once.
func TestWaitNamespaceGone(t *testing.T) {
	now := metav1.Now()
	tests := []struct {
		name     string
		ns       *corev1.Namespace
		gets     int // Gets before the namespace disappears (-1: never)
		wantErr  bool
		wantGets int
	}{
		{name: "absent", wantGets: 1},
		{name: "live, may stay", ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cs"}}, gets: -1, wantGets: 1},
		{name: "terminating, then gone", ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cs", DeletionTimestamp: &now, Finalizers: []string{"x"}}},
			gets: 3, wantGets: 4},
		{name: "never gone", ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cs", DeletionTimestamp: &now, Finalizers: []string{"x"}}},
			gets: -1, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.ns != nil {
				objs = append(objs, tc.ns)
			}
			cs := kubefake.NewSimpleClientset(objs...)
			n := 0
			cs.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
				n++
				if tc.ns != nil && (tc.gets < 0 || n <= tc.gets) {
					return true, tc.ns.DeepCopy(), nil
				}
				return true, nil, apierrors.NewNotFound(corev1.Resource("namespaces"), "cs")
			})
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := waitNamespaceGone(ctx, &kube.Client{Kube: cs}, "cs", time.Millisecond)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && n != tc.wantGets {
				t.Errorf("%d Gets, want %d", n, tc.wantGets)
			}
		})
	}
}
