// Package ksvc holds what the demo and the lab tests do with Knative Services: apply, wait Ready, call
// through the lab's ingress, and count a revision's pods.
package ksvc

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/thaw-dev/thaw/pkg/lab/kube"
)

// ServiceGVR is serving.knative.dev/v1 services.
var ServiceGVR = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}

// Host is the external host name of a ksvc under domain.
func Host(name, namespace, domain string) string { return name + "." + namespace + "." + domain }

// Ready reports a ksvc's Ready condition, its latest ready revision and the condition message.
func Ready(ctx context.Context, c *kube.Client, ns, name string) (bool, string, string, error) {
	u, err := c.Dynamic.Resource(ServiceGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, "", "", err
	}
	return readyOf(u)
}

func readyOf(u *unstructured.Unstructured) (bool, string, string, error) {
	gen, obs := u.GetGeneration(), int64(0)
	if v, ok, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration"); ok {
		obs = v
	}
	rev, _, _ := unstructured.NestedString(u.Object, "status", "latestReadyRevisionName")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, ci := range conds {
		m, _ := ci.(map[string]any)
		if m["type"] == "Ready" {
			msg, _ := m["message"].(string)
			reason, _ := m["reason"].(string)
			return m["status"] == "True" && obs >= gen, rev, strings.TrimSpace(reason + " " + msg), nil
		}
	}
	return false, rev, "no Ready condition yet", nil
}

// WaitReady waits for the ksvc's Ready condition and returns its latest ready revision.
func WaitReady(ctx context.Context, c *kube.Client, ns, name string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rev, msg string
	err := kube.Poll(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		ok, r, m, err := Ready(ctx, c, ns, name)
		rev, msg = r, m
		if err != nil {
			msg = err.Error()
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		return "", fmt.Errorf("ksvc %s/%s not Ready: %w (%s)", ns, name, err, msg)
	}
	return rev, nil
}

// Delete removes a ksvc (no error if absent).
func Delete(ctx context.Context, c *kube.Client, ns, name string) error {
	err := c.Dynamic.Resource(ServiceGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return err
	}
	return nil
}

// Response is one call through the ingress.
type Response struct {
	Status   int
	Body     string
	Header   http.Header
	Duration time.Duration
}

// Client calls ksvcs through the ingress at addr (host:port), setting the Host header.
type Client struct {
	Addr string
	HTTP *http.Client
}

// NewClient returns a Client with its own transport (keep-alive, no proxy from the environment).
func NewClient(addr string, timeout time.Duration) *Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
	}
	return &Client{Addr: addr, HTTP: &http.Client{Transport: tr, Timeout: timeout}}
}

// Get requests path on host.
func (c *Client) Get(ctx context.Context, host, path string) (Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+path, nil)
	if err != nil {
		return Response{}, err
	}
	req.Host = host
	t0 := time.Now()
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{Duration: time.Since(t0)}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return Response{Status: resp.StatusCode, Body: string(b), Header: resp.Header, Duration: time.Since(t0)}, err
}

// PodCounts counts a ksvc's pods: all of them, and those Running and Ready.
func PodCounts(ctx context.Context, c *kube.Client, ns, service string) (total, ready int, err error) {
	pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service=" + service})
	if err != nil {
		return 0, 0, err
	}
	for _, p := range pods.Items {
		total++
		if p.DeletionTimestamp != nil {
			continue
		}
		if kube.PodReady(&p) {
			ready++
		}
	}
	return total, ready, nil
}

// WaitNoPods waits until the ksvc has no pods at all (terminating ones included), calling tick with the
// counts every interval.
func WaitNoPods(ctx context.Context, c *kube.Client, ns, service string, interval, timeout time.Duration,
	tick func(elapsed time.Duration, total, ready int)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	return kube.Poll(ctx, interval, func(ctx context.Context) (bool, error) {
		total, ready, err := PodCounts(ctx, c, ns, service)
		if err != nil {
			return false, nil
		}
		if tick != nil {
			tick(time.Since(t0), total, ready)
		}
		return total == 0, nil
	})
}

// TrafficRevisions returns the revisions a ksvc's status routes traffic to.
func TrafficRevisions(ctx context.Context, c *kube.Client, ns, name string) ([]string, error) {
	u, err := c.Dynamic.Resource(ServiceGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	traffic, _, _ := unstructured.NestedSlice(u.Object, "status", "traffic")
	var out []string
	for _, t := range traffic {
		m, _ := t.(map[string]any)
		if r, _ := m["revisionName"].(string); r != "" {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ksvc %s/%s routes no traffic yet", ns, name)
	}
	return out, nil
}

// ProgrammedFunc reports whether kube-proxy has programmed a ClusterIP:port with endpoints.
type ProgrammedFunc func(ctx context.Context, clusterIP string, port int32) (bool, error)

// WaitRoutable waits until kube-proxy has programmed the public Service of every revision the ksvc
// routes to. The lab's ingress marks KIngresses ready without probing the data plane, so a ksvc can
// be Ready a moment before its Services are reachable from the node; waiting here without sending a
// request keeps the next request a cold start.
func WaitRoutable(ctx context.Context, c *kube.Client, ns, name string, programmed ProgrammedFunc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var pending string
	err := kube.Poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		revs, err := TrafficRevisions(ctx, c, ns, name)
		if err != nil {
			pending = err.Error()
			return false, nil
		}
		for _, r := range revs {
			svc, err := c.Kube.CoreV1().Services(ns).Get(ctx, r, metav1.GetOptions{})
			if err != nil || len(svc.Spec.Ports) == 0 {
				pending = "service " + r
				return false, nil
			}
			ok, err := programmed(ctx, svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
			if err != nil {
				return false, err
			}
			if !ok {
				pending = fmt.Sprintf("kube-proxy rules for %s (%s)", r, svc.Spec.ClusterIP)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("ksvc %s/%s not routable: %w (waiting for %s)", ns, name, err, pending)
	}
	return nil
}
