// Package measure holds the tool's measurement sources, each on the host's clock: the apiserver's audit
// log and a Deployment watch for the /scale patch, pod logs for queue-proxy's start, a pod watch for
// Ready, and Thaw's own timing (response header and the autoscaler's /debug/coldstarts).
package measure

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// ScaleEvent is a completed write to a Deployment (or its scale subresource) that set spec.replicas.
type ScaleEvent struct {
	Namespace, Name string
	Subresource     string // "scale" for the subresource, "" for the Deployment itself
	Verb            string
	Replicas        int32
	Received        time.Time // requestReceivedTimestamp
	Completed       time.Time // stageTimestamp of ResponseComplete: the write is done
}

// auditEvent holds the fields of an audit.k8s.io/v1 Event the tool reads.
type auditEvent struct {
	Stage     string `json:"stage"`
	Verb      string `json:"verb"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestObject            json.RawMessage `json:"requestObject"`
	RequestReceivedTimestamp time.Time       `json:"requestReceivedTimestamp"`
	StageTimestamp           time.Time       `json:"stageTimestamp"`
}

// replicasIn finds spec.replicas in a logged request body: a JSON patch (upstream's autoscaler), or an
// object (merge patch, Deployment update, Scale).
func replicasIn(body json.RawMessage) (int32, bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return 0, false
	}
	if body[0] == '[' {
		var ops []struct {
			Op    string          `json:"op"`
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		}
		if json.Unmarshal(body, &ops) != nil {
			return 0, false
		}
		for _, op := range ops {
			if (op.Op == "add" || op.Op == "replace") && op.Path == "/spec/replicas" {
				var n int32
				if json.Unmarshal(op.Value, &n) == nil {
					return n, true
				}
			}
		}
		return 0, false
	}
	var obj struct {
		Spec struct {
			Replicas *int32 `json:"replicas"`
		} `json:"spec"`
	}
	if json.Unmarshal(body, &obj) != nil || obj.Spec.Replicas == nil {
		return 0, false
	}
	return *obj.Spec.Replicas, true
}

// ParseAuditLine reads one line of a JSON audit log. ok is false for lines that are not a successful,
// completed write of a Deployment's replicas (other resources, other stages, failures, no replicas).
func ParseAuditLine(line []byte) (ev ScaleEvent, ok bool, err error) {
	var e auditEvent
	if err := json.Unmarshal(line, &e); err != nil {
		return ScaleEvent{}, false, fmt.Errorf("audit line: %w", err)
	}
	if e.Stage != "ResponseComplete" || e.ObjectRef == nil || e.ObjectRef.Resource != "deployments" ||
		e.ObjectRef.APIGroup != "apps" || (e.Verb != "patch" && e.Verb != "update") {
		return ScaleEvent{}, false, nil
	}
	if e.ObjectRef.Subresource != "" && e.ObjectRef.Subresource != "scale" {
		return ScaleEvent{}, false, nil
	}
	if e.ResponseStatus == nil || e.ResponseStatus.Code < 200 || e.ResponseStatus.Code > 299 {
		return ScaleEvent{}, false, nil
	}
	n, found := replicasIn(e.RequestObject)
	if !found {
		return ScaleEvent{}, false, nil
	}
	return ScaleEvent{Namespace: e.ObjectRef.Namespace, Name: e.ObjectRef.Name, Subresource: e.ObjectRef.Subresource,
		Verb: e.Verb, Replicas: n, Received: e.RequestReceivedTimestamp, Completed: e.StageTimestamp}, true, nil
}

// AuditLog follows a JSON audit log file from where it was opened: each Read returns the scale events
// of the complete lines written since the last one. Not safe for concurrent use.
type AuditLog struct {
	path   string
	offset int64
	// Bad counts lines that did not parse (a torn line at a rotation, say).
	Bad int
}

// OpenAuditLog starts following path at its current end, so earlier runs are not read.
func OpenAuditLog(path string) (*AuditLog, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err // readable, not only present
	}
	f.Close()
	return &AuditLog{path: path, offset: fi.Size()}, nil
}

// Read returns the scale events appended since the last Read. A file that shrank was rotated: it is
// read again from its start.
func (a *AuditLog) Read() ([]ScaleEvent, error) {
	f, err := os.Open(a.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < a.offset {
		a.offset = 0
	}
	if _, err := f.Seek(a.offset, io.SeekStart); err != nil {
		return nil, err
	}
	evs, n, bad, err := scanAudit(f)
	a.offset += n
	a.Bad += bad
	return evs, err
}

// scanAudit parses complete lines of r and returns the bytes consumed (a trailing partial line is
// left for the next read).
func scanAudit(r io.Reader) (evs []ScaleEvent, consumed int64, bad int, err error) {
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		line, rerr := br.ReadBytes('\n')
		if errors.Is(rerr, io.EOF) {
			return evs, consumed, bad, nil // partial or empty tail: not consumed
		}
		if rerr != nil {
			return evs, consumed, bad, rerr
		}
		consumed += int64(len(line))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		ev, ok, perr := ParseAuditLine(line)
		if perr != nil {
			bad++
			continue
		}
		if ok {
			evs = append(evs, ev)
		}
	}
}

// FirstScaleUp returns the earliest completed write from replicas 0 to more, for ns/name, completed
// at or after since.
func FirstScaleUp(evs []ScaleEvent, ns, name string, since time.Time) (ScaleEvent, bool) {
	var best ScaleEvent
	found := false
	for _, e := range evs {
		if e.Namespace != ns || e.Name != name || e.Replicas <= 0 || e.Completed.Before(since) {
			continue
		}
		if !found || e.Completed.Before(best.Completed) {
			best, found = e, true
		}
	}
	return best, found
}
