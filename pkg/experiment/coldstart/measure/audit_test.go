package measure

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseAuditLines(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := splitLines(b)
	// Lines of the lab apiserver's audit log: Thaw's autoscaler scaling from and to zero, upstream's
	// scaling up, the lab's server-side apply of the activator, an image swap.
	cases := []struct {
		name string
		line int
		ok   bool
		want ScaleEvent
	}{
		{"Thaw's scale patch from zero", 0, true, ScaleEvent{Namespace: "coldstart-e2e", Name: "cs-000-00001-deployment",
			Subresource: "scale", Verb: "patch", Replicas: 1, Received: mustTime(t, "2026-11-26T19:45:12.313966Z"), Completed: mustTime(t, "2026-11-26T19:45:12.322130Z")}},
		{"scale to zero", 1, true, ScaleEvent{Namespace: "coldstart-e2e", Name: "cs-000-00001-deployment",
			Subresource: "scale", Verb: "patch", Replicas: 0, Received: mustTime(t, "2026-11-26T19:45:20.338877Z"), Completed: mustTime(t, "2026-11-26T19:45:20.351419Z")}},
		{"upstream's scale patch", 2, true, ScaleEvent{Namespace: "default", Name: "fa-steps-upstream-00001-deployment",
			Subresource: "scale", Verb: "patch", Replicas: 2, Received: mustTime(t, "2026-11-26T19:40:17.276114Z"), Completed: mustTime(t, "2026-11-26T19:40:17.292853Z")}},
		{"apply without replicas", 3, false, ScaleEvent{}},
		{"image swap", 4, false, ScaleEvent{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, ok, err := ParseAuditLine(lines[c.line])
			if err != nil {
				t.Fatal(err)
			}
			if ok != c.ok || !ev.Received.Equal(c.want.Received) || !ev.Completed.Equal(c.want.Completed) {
				t.Fatalf("got %+v ok=%v, want %+v ok=%v", ev, ok, c.want, c.ok)
			}
			ev.Received, ev.Completed, c.want.Received, c.want.Completed = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if ev != c.want {
				t.Errorf("got %+v, want %+v", ev, c.want)
			}
		})
	}
}

func TestParseAuditLineRejects(t *testing.T) {
	for name, line := range map[string]string{
		"other resource":     `{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"pods","apiGroup":"","namespace":"x","name":"p"},"responseStatus":{"code":200},"requestObject":{"spec":{"replicas":1}}}`,
		"received stage":     `{"stage":"RequestReceived","verb":"patch","objectRef":{"resource":"deployments","apiGroup":"apps","namespace":"x","name":"d"},"requestObject":{"spec":{"replicas":1}}}`,
		"status subresource": `{"stage":"ResponseComplete","verb":"update","objectRef":{"resource":"deployments","apiGroup":"apps","subresource":"status","namespace":"x","name":"d"},"responseStatus":{"code":200},"requestObject":{"spec":{"replicas":1}}}`,
		"get":                `{"stage":"ResponseComplete","verb":"get","objectRef":{"resource":"deployments","apiGroup":"apps","namespace":"x","name":"d"},"responseStatus":{"code":200}}`,
		"patch of labels":    `{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"deployments","apiGroup":"apps","namespace":"x","name":"d"},"responseStatus":{"code":200},"requestObject":[{"op":"add","path":"/metadata/labels/a","value":"b"}]}`,
	} {
		if ev, ok, err := ParseAuditLine([]byte(line)); ok || err != nil {
			t.Errorf("%s: got %+v ok=%v err=%v, want skipped", name, ev, ok, err)
		}
	}
	// Writes of the Deployment itself: a JSON patch replacing replicas, a whole-object update.
	for name, line := range map[string]string{
		"JSON patch": `{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"deployments","apiGroup":"apps","namespace":"x","name":"d"},"responseStatus":{"code":200},"requestObject":[{"op":"replace","path":"/spec/replicas","value":3}]}`,
		"update":     `{"stage":"ResponseComplete","verb":"update","objectRef":{"resource":"deployments","apiGroup":"apps","namespace":"x","name":"d"},"responseStatus":{"code":200},"requestObject":{"kind":"Deployment","spec":{"replicas":3}}}`,
	} {
		if ev, ok, err := ParseAuditLine([]byte(line)); !ok || err != nil || ev.Replicas != 3 || ev.Subresource != "" {
			t.Errorf("%s: got %+v ok=%v err=%v, want replicas 3", name, ev, ok, err)
		}
	}
	if _, _, err := ParseAuditLine([]byte(`{"stage":`)); err == nil {
		t.Error("a torn line must be an error")
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			out = append(out, b[start:i])
			start = i + 1
		}
	}
	return out
}

func TestAuditLogFollowsAppendsAndRotation(t *testing.T) {
	sample, err := os.ReadFile(filepath.Join("testdata", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := splitLines(sample)
	path := filepath.Join(t.TempDir(), "audit.log")
	// What is there before the run is not read.
	if err := os.WriteFile(path, append(append([]byte{}, lines[0]...), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := OpenAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	appendFile := func(b []byte) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// A complete line and half of the next: only the complete one counts until the rest arrives.
	l1 := lines[1]
	appendFile(append(append(append([]byte{}, l1...), '\n'), lines[2][:40]...))
	evs, err := a.Read()
	if err != nil || len(evs) != 1 || evs[0].Replicas != 0 {
		t.Fatalf("first read: %+v %v", evs, err)
	}
	appendFile(append(append([]byte{}, lines[2][40:]...), '\n'))
	evs, err = a.Read()
	if err != nil || len(evs) != 1 || evs[0].Name != "fa-steps-upstream-00001-deployment" {
		t.Fatalf("second read: %+v %v", evs, err)
	}
	if evs, err := a.Read(); err != nil || len(evs) != 0 {
		t.Fatalf("nothing new: %+v %v", evs, err)
	}
	// Rotation: a new, shorter file is read from its start.
	if err := os.WriteFile(path, append(append([]byte{}, lines[1]...), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if evs, err := a.Read(); err != nil || len(evs) != 1 {
		t.Fatalf("after rotation: %+v %v", evs, err)
	}
	if _, err := OpenAuditLog(filepath.Join(t.TempDir(), "missing.log")); err == nil {
		t.Error("a missing log must be an error (the caller falls back to the watch)")
	}
}

func TestFirstScaleUp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	evs := []ScaleEvent{
		{Namespace: "ns", Name: "d", Replicas: 1, Completed: t0.Add(-time.Second)}, // before the request
		{Namespace: "ns", Name: "d", Replicas: 0, Completed: t0.Add(time.Millisecond)},
		{Namespace: "ns", Name: "d", Replicas: 2, Completed: t0.Add(5 * time.Millisecond)},
		{Namespace: "ns", Name: "d", Replicas: 1, Completed: t0.Add(3 * time.Millisecond)},
		{Namespace: "other", Name: "d", Replicas: 1, Completed: t0.Add(time.Millisecond)},
	}
	ev, ok := FirstScaleUp(evs, "ns", "d", t0)
	if !ok || !ev.Completed.Equal(t0.Add(3*time.Millisecond)) {
		t.Errorf("got %+v %v, want the 3 ms one", ev, ok)
	}
	if _, ok := FirstScaleUp(evs, "ns", "missing", t0); ok {
		t.Error("no event for another Deployment")
	}
}
