package measure

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// QueueProxy is the name of Knative's sidecar container.
const QueueProxy = "queue-proxy"

// ParseLogTimestamp splits a line of a pod log read with timestamps=true: the RFC 3339 time the
// container runtime stamped when it read the line, a space, then the line.
func ParseLogTimestamp(line string) (time.Time, string, error) {
	ts, rest, ok := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
	if !ok && ts == "" {
		return time.Time{}, "", errors.New("empty log line")
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("log line %.60q has no timestamp: %w", line, err)
	}
	return t, rest, nil
}

// FirstLogLine returns the timestamp and text of the first line a container logged: for queue-proxy,
// its start ("Queue container is starting ...").
func FirstLogLine(ctx context.Context, kc kubernetes.Interface, ns, pod, container string) (time.Time, string, error) {
	limit := int64(16 << 10)
	rc, err := kc.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, Timestamps: true, LimitBytes: &limit}).Stream(ctx)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("log of %s/%s %s: %w", ns, pod, container, err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 0, 4096), int(limit))
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return time.Time{}, "", fmt.Errorf("log of %s/%s %s: %w", ns, pod, container, err)
		}
		return time.Time{}, "", fmt.Errorf("log of %s/%s %s is empty", ns, pod, container)
	}
	return ParseLogTimestamp(sc.Text())
}
