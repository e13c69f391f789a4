package coldstart

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHeaderRoundTrip(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	cases := []struct {
		name string
		tl   ActivatorTimeline
		want string
	}{
		{"all", ActivatorTimeline{Arrival: base, PokeSent: base.Add(time.Millisecond), PodReady: base.Add(time.Second),
			FirstByte: base.Add(2 * time.Second), Pod: "10.0.0.1:8012"},
			"arrival=1767323045000000006;poke=1767323045001000006;ready=1767323046000000006;firstbyte=1767323047000000006;pod=10.0.0.1:8012"},
		{"no poke", ActivatorTimeline{Arrival: base, PodReady: base.Add(time.Second), FirstByte: base.Add(2 * time.Second), Pod: "p:1"},
			"arrival=1767323045000000006;ready=1767323046000000006;firstbyte=1767323047000000006;pod=p:1"},
		{"arrival only", ActivatorTimeline{Arrival: base}, "arrival=1767323045000000006"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := c.tl.Header()
			if h != c.want {
				t.Fatalf("Header() = %q, want %q", h, c.want)
			}
			got, warm, err := ParseHeader(h)
			if err != nil || warm {
				t.Fatalf("ParseHeader(%q) = warm %v, err %v", h, warm, err)
			}
			if !got.Arrival.Equal(c.tl.Arrival) || !got.PokeSent.Equal(c.tl.PokeSent) || !got.PodReady.Equal(c.tl.PodReady) ||
				!got.FirstByte.Equal(c.tl.FirstByte) || got.Pod != c.tl.Pod {
				t.Fatalf("round trip: got %+v, want %+v", got, c.tl)
			}
		})
	}
}

func TestParseHeader(t *testing.T) {
	ok := []struct {
		in       string
		warm     bool
		arrival  int64
		pokeZero bool
	}{
		{"warm", true, 0, true},
		{"  warm ", true, 0, true},
		{"arrival=5", false, 5, true},
		{"arrival=5;poke=0", false, 5, true},
		{"arrival=5;future=x;pod=a:1", false, 5, true},
		{"arrival=5; poke=7", false, 5, false},
	}
	for _, c := range ok {
		tl, warm, err := ParseHeader(c.in)
		if err != nil || warm != c.warm {
			t.Errorf("ParseHeader(%q) = warm %v err %v, want warm %v", c.in, warm, err, c.warm)
			continue
		}
		if !c.warm && tl.Arrival.UnixNano() != c.arrival {
			t.Errorf("ParseHeader(%q).Arrival = %d, want %d", c.in, tl.Arrival.UnixNano(), c.arrival)
		}
		if tl.PokeSent.IsZero() != c.pokeZero {
			t.Errorf("ParseHeader(%q).PokeSent = %v", c.in, tl.PokeSent)
		}
	}
	bad := []string{
		"", "   ", "WARM", "cold", ";", "arrival", "arrival=", "arrival=x", "arrival=-1", "arrival=1.5",
		"arrival=1;arrival=2", "poke=1", "=1", "arrival=99999999999999999999", "arrival=1;;", "arrival=1;poke",
		"pod=a:1", "\x00\xff", strings.Repeat("a=1;", 1000),
	}
	for _, in := range bad {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("ParseHeader(%q) panicked: %v", in, p)
				}
			}()
			if tl, warm, err := ParseHeader(in); err == nil || !errors.Is(err, ErrMalformed) || warm || tl != (ActivatorTimeline{}) {
				t.Errorf("ParseHeader(%q) = %+v, %v, %v; want ErrMalformed", in, tl, warm, err)
			}
		}()
	}
}

// FuzzParseHeader checks ParseHeader never panics and that what it accepts
// survives a round trip.
func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{"warm", "arrival=1;poke=2;ready=3;firstbyte=4;pod=x:1", "arrival=1;x=y", ";=;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tl, warm, err := ParseHeader(s)
		if err != nil || warm {
			return
		}
		if strings.ContainsAny(tl.Pod, ";") {
			return // a pod with ';' cannot round-trip; the activator never writes one
		}
		again, _, err := ParseHeader(tl.Header())
		if err != nil {
			t.Fatalf("re-parsing %q: %v", tl.Header(), err)
		}
		if !again.Arrival.Equal(tl.Arrival) || !again.FirstByte.Equal(tl.FirstByte) || again.Pod != tl.Pod {
			t.Fatalf("round trip of %q: %+v vs %+v", s, again, tl)
		}
	})
}
