package podharness

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func queueProbe(t *testing.T, client *http.Client, dest string) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+dest+"/healthz", nil)
	req.Header.Set("K-Network-Probe", "queue")
	req.Header.Set("User-Agent", "Knative-Activator-Probe")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
}

func TestTwoPods(t *testing.T) {
	var bridge string
	t.Run("pods", func(t *testing.T) {
		start := time.Now()
		n := NewNetwork(t)
		bridge = n.Bridge
		t.Logf("network in %v", time.Since(start))
		pods := []*Pod{n.StartPod(t, PodOptions{ContainerConcurrency: 1}), n.StartPod(t, PodOptions{})}
		t.Logf("2 pods in %v", time.Since(start))
		t.Cleanup(func() { t.Logf("teardown begins at %v", time.Since(start)) })
		if pods[0].IP == pods[1].IP {
			t.Fatalf("both pods have IP %s", pods[0].IP)
		}
		client := newClient()
		for _, p := range pods {
			code, body, err := queueProbe(t, client, p.Dest())
			if err != nil || code != http.StatusOK || body != "queue" {
				t.Fatalf("queue probe of %s = %d %q %v; want 200 queue\n%s", p.Dest(), code, body, err, p.Logs())
			}
			req, _ := http.NewRequest(http.MethodGet, p.URL()+"/?sleep=10", nil)
			req.Header.Set("K-Proxy-Request", "activator")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("request through %s: %v", p.Dest(), err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "autoscale") {
				t.Fatalf("request through %s = %d %q", p.Dest(), resp.StatusCode, b)
			}
			// queue-proxy's autoscaling stats are served too.
			resp, err = client.Get(p.MetricsURL())
			if err != nil || resp.Header.Get("Content-Type") != "application/protobuf" {
				t.Fatalf("metrics of %s: %v %v", p.Name, err, resp)
			}
			resp.Body.Close()
		}
		// The process behind Dest is queue-proxy itself (ip netns exec replaced itself), so a kill by
		// PID reaches it.
		exe, err := exec.Command("readlink", "/proc/"+itoa(pods[0].queue.Process.Pid)+"/exe").Output()
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(exe)), "queue") {
			t.Errorf("queue-proxy PID runs %q (%v)", exe, err)
		}
		pods[0].SetRefusing()
		if _, _, err := queueProbe(t, client, pods[0].Dest()); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("probe of a refusing pod: %v, want connection refused", err)
		}
	})
	if bridge != "" {
		if err := exec.Command("ip", "link", "show", bridge).Run(); err == nil {
			t.Errorf("bridge %s left behind", bridge)
		}
	}
}

func itoa(i int) string { return fmtInt(i) }

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestDeferredAppColdStart(t *testing.T) {
	n := NewNetwork(t)
	p := n.StartPod(t, PodOptions{DeferApp: true})
	// Queue-proxy holds the probe while it polls the app, then answers 503; either way it must not pass.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 500 * time.Millisecond}
	if code, _, err := queueProbe(t, client, p.Dest()); err == nil && code == http.StatusOK {
		t.Fatal("probe passed before the app runs")
	}
	p.StartApp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("never ready: %v\n%s", err, p.Logs())
	}
}

func TestDelayedPod(t *testing.T) {
	n := NewNetwork(t)
	const oneWay = 75 * time.Millisecond
	p := n.StartPod(t, PodOptions{Delay: oneWay})
	client := newClient()
	start := time.Now()
	code, body, err := queueProbe(t, client, p.Dest())
	took := time.Since(start)
	if err != nil || code != http.StatusOK || body != "queue" {
		t.Fatalf("probe = %d %q %v", code, body, err)
	}
	// A fresh connection costs two round trips: connect, then the request.
	if took < 4*oneWay || took > 4*oneWay+200*time.Millisecond {
		t.Errorf("probe through a %v RTT link took %v, want about %v", 2*oneWay, took, 4*oneWay)
	}
	t.Logf("probe over %v RTT took %v", 2*oneWay, took)
}

func TestH2CPod(t *testing.T) {
	n := NewNetwork(t)
	p := n.StartPod(t, PodOptions{H2C: true, App: n.BuildApp(t, "github.com/thaw-dev/thaw/test/apps/grpcping")})
	if !strings.HasSuffix(p.Dest(), ":8013") {
		t.Fatalf("h2c pod Dest = %s, want port 8013", p.Dest())
	}
	code, body, err := queueProbe(t, newClient(), p.Dest())
	if err != nil || code != http.StatusOK || body != "queue" {
		t.Fatalf("queue probe of %s = %d %q %v\n%s", p.Dest(), code, body, err, p.Logs())
	}
}
