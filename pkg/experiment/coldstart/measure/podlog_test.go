package measure

import (
	"testing"
	"time"
)

func TestParseLogTimestamp(t *testing.T) {
	cases := []struct {
		line, rest string
		want       time.Time
		err        bool
	}{
		{line: `2026-11-26T19:40:02.123456789Z {"severity":"INFO","message":"Queue container is starting with BreakerParams{QueueDepth:10000 MaxConcurrency:0 InitialCapacity:0}"}` + "\n",
			rest: `{"severity":"INFO","message":"Queue container is starting with BreakerParams{QueueDepth:10000 MaxConcurrency:0 InitialCapacity:0}"}`,
			want: time.Date(2026, 11, 26, 19, 40, 2, 123456789, time.UTC)},
		{line: "2026-11-26T19:40:02.5+01:00 hello", rest: "hello", want: time.Date(2026, 11, 26, 18, 40, 2, 5e8, time.UTC)},
		{line: "2026-11-26T19:40:02Z", rest: "", want: time.Date(2026, 11, 26, 19, 40, 2, 0, time.UTC)},
		{line: "Queue container is starting", err: true},
		{line: "", err: true},
	}
	for _, c := range cases {
		got, rest, err := ParseLogTimestamp(c.line)
		if c.err {
			if err == nil {
				t.Errorf("%q: want an error", c.line)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) || rest != c.rest {
			t.Errorf("%q: got %v %q %v, want %v %q", c.line, got, rest, err, c.want, c.rest)
		}
	}
}
