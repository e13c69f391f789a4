package pacer

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func k(i int) Key { return Key{Namespace: "ns", Name: fmt.Sprintf("r%d", i)} }

// fill offers n wake-ups at at with arrivals i ms apart and returns how
// many were admitted at once.
func fill(p *Pacer, at time.Time, n int) int {
	ok := 0
	for i := range n {
		if p.Offer(at, k(i), at.Add(time.Duration(i)*time.Millisecond), 1).OK {
			ok++
		}
	}
	return ok
}

func TestOfferAdmitsUnderTheWindow(t *testing.T) {
	for _, c := range []struct {
		name           string
		window, offers int
		wantAdmitted   int
	}{
		{"under", 4, 3, 3},
		{"exactly", 4, 4, 4},
		{"over", 4, 7, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := New(Options{Initial: float64(c.window)})
			if got := fill(p, t0, c.offers); got != c.wantAdmitted {
				t.Errorf("admitted %d of %d, want %d", got, c.offers, c.wantAdmitted)
			}
			if st := p.Stats(t0); st.Queued != c.offers-c.wantAdmitted || st.Starting != c.wantAdmitted {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// Waiting wake-ups are admitted in arrival order (the first poke), not in
// offer order, as pods become ready; a retried offer is answered once as
// First.
func TestArrivalOrder(t *testing.T) {
	p := New(Options{Initial: 2, Min: 1})
	p.Offer(t0, k(0), t0, 1)
	p.Offer(t0, k(1), t0, 1)
	// Offered out of order: arrival decides.
	p.Offer(t0, k(4), t0.Add(4*time.Second), 1)
	p.Offer(t0, k(2), t0.Add(2*time.Second), 1)
	p.Offer(t0, k(3), t0.Add(3*time.Second), 1)
	if a := p.Offer(t0, k(2), t0.Add(2*time.Second), 1); a.OK {
		t.Fatalf("k2 offered again while waiting: %+v", a)
	}
	if st := p.Stats(t0); st.Queued != 3 {
		t.Fatalf("queued %d, want 3 (one entry per revision)", st.Queued)
	}
	var order []Key
	for i := range 2 {
		at := t0.Add(time.Duration(i+1) * time.Second)
		p.Pod(at, k(i), "pod", at, PodStarting)
		order = append(order, p.Pod(at, k(i), "pod", at, PodReady)...)
	}
	at := t0.Add(3 * time.Second)
	order = append(order, p.Pod(at, k(2), "pod", at, PodReady)...)
	if want := []Key{k(2), k(3), k(4)}; !slices.Equal(order, want) {
		t.Fatalf("admitted %v, want %v", order, want)
	}
	a := p.Offer(at, k(3), t0, 1)
	if !a.OK || !a.First || a.Paced != 2*time.Second {
		t.Fatalf("k3 retried: %+v, want OK, First, paced 2s", a)
	}
	if a := p.Offer(at, k(3), t0, 1); !a.OK || a.First {
		t.Fatalf("k3 again: %+v, want OK, not First", a)
	}
}

// Starting counts pods not ready, and pods asked for that do not exist yet;
// pods stuck longer than StartTTL stop counting.
func TestStartingCount(t *testing.T) {
	p := New(Options{Initial: 100, StartTTL: time.Minute})
	p.Offer(t0, k(0), t0, 3)
	if st := p.Stats(t0); st.Starting != 3 {
		t.Fatalf("asked for 3: starting %d", st.Starting)
	}
	p.Pod(t0, k(0), "a", t0, PodStarting)
	p.Pod(t0, k(0), "b", t0, PodStarting)
	if st := p.Stats(t0); st.Starting != 3 {
		t.Fatalf("2 of 3 exist: starting %d, want 3", st.Starting)
	}
	p.Pod(t0, k(0), "a", t0, PodReady)
	if st := p.Stats(t0); st.Starting != 1 {
		t.Fatalf("first ready ends the admission, b starts: starting %d, want 1", st.Starting)
	}
	// A warm revision's pods count, though it never waits here.
	p.Pod(t0, k(1), "w", t0, PodStarting)
	if st := p.Stats(t0); st.Starting != 2 {
		t.Fatalf("starting %d, want 2", st.Starting)
	}
	p.Pod(t0, k(1), "w", t0, PodGone)
	later := t0.Add(time.Minute)
	p.Tick(later)
	if st := p.Stats(later); st.Starting != 0 {
		t.Fatalf("b stuck a minute: starting %d, want 0", st.Starting)
	}
}

func TestWithdrawForgetFlush(t *testing.T) {
	p := New(Options{Initial: 2, Min: 1})
	fill(p, t0, 5) // r0, r1 admitted; r2, r3, r4 wait
	// r0 no longer wants pods before any exists: its slot goes to r2.
	if got := p.Withdraw(t0, k(0)); !slices.Equal(got, []Key{k(2)}) {
		t.Fatalf("withdraw r0 admitted %v, want [r2]", got)
	}
	// r3 withdrawn while waiting: dropped from the queue.
	p.Withdraw(t0, k(3))
	if got := p.Forget(t0, k(1)); !slices.Equal(got, []Key{k(4)}) {
		t.Fatalf("forget r1 admitted %v, want [r4]", got)
	}
	p.Offer(t0, k(7), t0, 1)
	p.Offer(t0, k(8), t0, 1)
	if got := p.Flush(t0.Add(time.Second)); !slices.Equal(got, []Key{k(7), k(8)}) {
		t.Fatalf("flush admitted %v", got)
	}
	if st := p.Stats(t0); st.Queued != 0 {
		t.Fatalf("queued %d after flush", st.Queued)
	}
}

// burst runs a lone start of 1 s (the baseline), then 12 wake-ups at
// once on a window of 8 (4 wait), the first 4 ready after lat each: the
// burst's first starts, which choose its first move.
func burst(p *Pacer, lat time.Duration) time.Time {
	p.Offer(t0, k(100), t0, 1)
	p.Pod(t0.Add(time.Second), k(100), "p", t0, PodReady)
	at := t0.Add(time.Minute)
	fill(p, at, 12)
	done := at.Add(lat)
	for i := range 4 {
		p.Pod(done, k(i), "p", done, PodReady)
	}
	return done
}

// The burst's first move: the speedup n×B/L of its first starts (8 pods
// starting, a lone start 1 s) says cut below Speedup, else grow.
func TestFirstMove(t *testing.T) {
	for _, c := range []struct {
		name string
		lat  time.Duration
		want float64
	}{
		{"shared: speedup 2, cut", 4 * time.Second, 8 * DefaultCut},
		{"parallel: speedup 5.3, grow", 1500 * time.Millisecond, 8 * DefaultGrow},
		{"no slower than alone: speedup 8, grow", time.Second, 8 * DefaultGrow},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := New(Options{Initial: 8, Min: 2})
			done := burst(p, c.lat)
			if w := p.Stats(done).Window; w != c.want {
				t.Fatalf("window %.1f, want %.1f", w, c.want)
			}
		})
	}
}

// With nothing waiting the window never moves, however slow the starts:
// a burst the window holds is not paced, so there is nothing to learn.
func TestNoQueueNoMove(t *testing.T) {
	for _, lat := range []time.Duration{time.Second, 10 * time.Second, time.Minute} {
		p := New(Options{Initial: 30})
		p.Offer(t0, k(100), t0, 1)
		p.Pod(t0.Add(time.Second), k(100), "p", t0, PodReady)
		at := t0.Add(time.Minute)
		fill(p, at, 25)
		for i := range 25 {
			p.Pod(at.Add(lat), k(i), "p", at, PodReady)
		}
		if st := p.Stats(at.Add(lat)); st.Window != 30 || st.Rate != 0 {
			t.Fatalf("25 at once taking %v: %+v, want window 30 and no rate", lat, st)
		}
	}
}

// While nothing waits the window moves back to Initial by Recover pods a
// second, from either side.
func TestWindowReturnsToInitial(t *testing.T) {
	for _, lat := range []time.Duration{4 * time.Second, time.Second} {
		p := New(Options{Initial: 8, Min: 2, Recover: 1})
		done := burst(p, lat)
		moved := p.Stats(done).Window
		// The rest become ready; nothing waits.
		for i := 4; i < 12; i++ {
			p.Pod(done, k(i), "p", done, PodReady)
		}
		p.Tick(done)
		p.Tick(done.Add(time.Second))
		if w := p.Stats(done).Window; w == moved || w == 8 {
			t.Fatalf("window %.1f a second after %.1f, want a step toward 8", w, moved)
		}
		p.Tick(done.Add(10 * time.Second))
		if w := p.Stats(done).Window; w != 8 {
			t.Fatalf("window %.1f after 10 s idle, want back to 8", w)
		}
	}
}

// The baseline is the least latency of the last BaseWindow.
func TestBaselineSlides(t *testing.T) {
	p := New(Options{BaseWindow: time.Minute})
	lat := func(at time.Time, i int, d time.Duration) {
		p.Offer(at, k(i), at, 1)
		p.Pod(at.Add(d), k(i), "p", at, PodReady)
	}
	lat(t0, 0, time.Second)
	lat(t0.Add(10*time.Second), 1, 3*time.Second)
	if b := p.Stats(t0.Add(20 * time.Second)).Baseline; b != time.Second {
		t.Fatalf("baseline %v, want 1s", b)
	}
	if b := p.Stats(t0.Add(62 * time.Second)).Baseline; b != 3*time.Second {
		t.Fatalf("baseline %v after the 1 s sample aged out, want 3s", b)
	}
}
