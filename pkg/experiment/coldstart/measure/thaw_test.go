package measure

import (
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/coldstart"
)

func TestParseHeader(t *testing.T) {
	cases := []struct {
		name string
		v    string
		want coldstart.ActivatorTimeline
		warm bool
		err  bool
	}{
		{name: "full", v: "arrival=1000;poke=2000;ready=3000;firstbyte=4000;pod=10.88.1.5:8012",
			want: coldstart.ActivatorTimeline{Arrival: time.Unix(0, 1000), PokeSent: time.Unix(0, 2000), PodReady: time.Unix(0, 3000),
				FirstByte: time.Unix(0, 4000), Pod: "10.88.1.5:8012"}},
		{name: "no poke, unknown key", v: "arrival=1000;ready=3000;extra=x;firstbyte=4000",
			want: coldstart.ActivatorTimeline{Arrival: time.Unix(0, 1000), PodReady: time.Unix(0, 3000), FirstByte: time.Unix(0, 4000)}},
		{name: "warm", v: "warm", warm: true},
		{name: "empty", v: "", err: true},
		{name: "no arrival", v: "poke=2000", err: true},
		{name: "not a number", v: "arrival=soon", err: true},
		{name: "no equals", v: "arrival", err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, warm, err := ParseHeader(c.v)
			if (err != nil) != c.err || warm != c.warm || got != c.want {
				t.Errorf("ParseHeader(%q) = %+v %v %v", c.v, got, warm, err)
			}
		})
	}
}

func TestScaleRecordsParseAndMatch(t *testing.T) {
	recs, err := ParseScaleRecords([]byte(`[
 {"namespace":"coldstart","revision":"cs-000-00001","pokeReceived":"2026-11-26T19:40:01.1Z","decided":"2026-11-26T19:40:01.1002Z","scaleWritten":"2026-11-26T19:40:01.103Z","desiredScale":1},
 {"namespace":"coldstart","revision":"cs-000-00001","pokeReceived":"2026-11-26T19:41:01.1Z","decided":"2026-11-26T19:41:01.1002Z","scaleWritten":"2026-11-26T19:41:01.103Z","desiredScale":1},
 {"namespace":"coldstart","revision":"cs-001-00001","pokeReceived":"0001-01-01T00:00:00Z","decided":"2026-11-26T19:40:01.2Z","scaleWritten":"2026-11-26T19:40:01.203Z","desiredScale":1}
]`))
	if err != nil || len(recs) != 3 {
		t.Fatalf("%v %v", recs, err)
	}
	from := time.Date(2026, 11, 26, 19, 40, 0, 0, time.UTC)
	r, ok := MatchScaleRecord(recs, "coldstart", "cs-000-00001", from, from.Add(30*time.Second))
	if !ok || r.DesiredScale != 1 || !r.PokeReceived.Equal(from.Add(1100*time.Millisecond)) {
		t.Errorf("match: %+v %v", r, ok)
	}
	// No poke (a periodic stat woke it): the decision places it.
	if r, ok := MatchScaleRecord(recs, "coldstart", "cs-001-00001", from, from.Add(30*time.Second)); !ok || r.Revision != "cs-001-00001" {
		t.Errorf("match without poke: %+v %v", r, ok)
	}
	if _, ok := MatchScaleRecord(recs, "coldstart", "cs-000-00001", from.Add(2*time.Minute), from.Add(3*time.Minute)); ok {
		t.Error("a record outside the window must not match")
	}
	if _, err := ParseScaleRecords([]byte(`404 page not found`)); err == nil {
		t.Error("garbage must be an error")
	}
}
