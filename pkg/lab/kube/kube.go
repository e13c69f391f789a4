// Package kube is the lab's small Kubernetes toolbox: server-side apply of multi-document YAML through
// the dynamic client, and the waits the lab needs (CRDs established, Deployments available, node Ready).
package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// FieldManager owns the fields the lab applies.
const FieldManager = "thaw-lab"

// Client bundles the typed and dynamic clients of one cluster.
type Client struct {
	Config  *rest.Config
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper
	disc    discovery.CachedDiscoveryInterface
}

// NewFromKubeconfig builds a Client from a kubeconfig file.
func NewFromKubeconfig(path string) (*Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	return New(cfg)
}

// New builds a Client.
func New(cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 100, 200
	// Knative's webhook warns about insecure defaults on every ksvc; the lab's output is not the place.
	cfg.WarningHandler = rest.NoWarnings{}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc := memory.NewMemCacheClient(kc.Discovery())
	return &Client{Config: cfg, Kube: kc, Dynamic: dc, disc: disc,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(disc)}, nil
}

// Decode splits multi-document YAML into objects, skipping empty documents.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" {
			return nil, fmt.Errorf("document without kind: %.80s", strings.TrimSpace(string(doc)))
		}
		out = append(out, u)
	}
}

// Apply server-side-applies objs in order. CRDs are applied first and awaited (Established) before the
// rest, so custom resources in the same batch map.
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	var crds, rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o)
		} else {
			rest = append(rest, o)
		}
	}
	for _, o := range crds {
		if err := c.applyOne(ctx, o); err != nil {
			return err
		}
	}
	if len(crds) > 0 {
		for _, o := range crds {
			if err := c.WaitCRDEstablished(ctx, o.GetName()); err != nil {
				return err
			}
		}
		c.mapper.Reset()
	}
	for _, o := range rest {
		if err := c.applyOne(ctx, o); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) resourceFor(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		c.mapper.Reset()
		if m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, fmt.Errorf("map %s: %w", gvk, err)
		}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		return c.Dynamic.Resource(m.Resource).Namespace(ns), nil
	}
	return c.Dynamic.Resource(m.Resource), nil
}

// applyOne applies one object, retrying while the apiserver or a webhook the object depends on is still
// starting (Knative's webhook answers a few seconds after its Deployment exists).
func (c *Client) applyOne(ctx context.Context, o *unstructured.Unstructured) error {
	data, err := o.MarshalJSON()
	if err != nil {
		return err
	}
	force := true
	var last error
	for attempt := 0; ; attempt++ {
		ri, err := c.resourceFor(o)
		if err == nil {
			_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data,
				metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
		}
		if err == nil {
			return nil
		}
		last = err
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) && !strings.Contains(err.Error(), "webhook") {
			return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apply %s %s/%s: %w (last error: %v)", o.GetKind(), o.GetNamespace(), o.GetName(), ctx.Err(), last)
		case <-time.After(backoff(attempt)):
		}
	}
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 4)
	return min(d, time.Second)
}

// Poll calls cond every interval until it returns true, an error, or ctx ends.
func Poll(ctx context.Context, interval time.Duration, cond func(context.Context) (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// WaitCRDEstablished waits for a CRD's Established condition.
func (c *Client) WaitCRDEstablished(ctx context.Context, name string) error {
	err := Poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		u, err := c.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, ci := range conds {
			m, _ := ci.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not established: %w", name, err)
	}
	return nil
}

// DeploymentAvailable tells whether d has rolled out completely and is available.
func DeploymentAvailable(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if d.Status.ObservedGeneration < d.Generation {
		return false
	}
	return d.Status.UpdatedReplicas == want && d.Status.AvailableReplicas >= want && d.Status.Replicas == want
}

// WaitDeployments waits until every named Deployment in ns is fully rolled out and available.
func (c *Client) WaitDeployments(ctx context.Context, ns string, names ...string) error {
	pending := ""
	err := Poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			d, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, n, metav1.GetOptions{})
			if err != nil || !DeploymentAvailable(d) {
				pending = n
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s/%s not available: %w", ns, pending, err)
	}
	return nil
}

// WaitNodeReady waits for node's Ready condition.
func (c *Client) WaitNodeReady(ctx context.Context, node string) error {
	err := Poll(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		n, err := c.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready: %w", node, err)
	}
	return nil
}

// PodReady reports whether p's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
