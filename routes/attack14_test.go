package routes_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// Attacks on Table.SyncedUpTo (#14), the readers' per-message check that
// the table has synced up to a message's time: it must answer as
// !at.After(SyncedAt()) does, for every time a message can carry and every
// state a table can be in, also while the table syncs.

// a14Time returns a random time of one of the shapes a message's or a
// load's time can have: around a pivot to the nanosecond, kafka-go's
// millisecond times, with a monotonic reading, in another zone, the zero
// time, and far outside the nanosecond range.
func a14Time(rng *rand.Rand, pivot time.Time) time.Time {
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("x", -7*3600+1), time.FixedZone("y", 14*3600)}
	var at time.Time
	switch rng.IntN(9) {
	case 0:
		at = pivot.Add(time.Duration(rng.Int64N(5) - 2))
	case 1:
		at = time.UnixMilli(pivot.UnixMilli() + rng.Int64N(5) - 2)
	case 2:
		at = time.Now().Add(time.Duration(rng.Int64N(int64(2*time.Hour))) - time.Hour) // monotonic reading
	case 3:
		at = time.Time{}
	case 4:
		at = time.Unix(rng.Int64N(1<<40)-1<<39, rng.Int64N(1e9)) // years ±17000
	case 5:
		at = time.Unix(0, math.MinInt64).Add(time.Duration(rng.Int64N(int64(4*time.Second))) - 2*time.Second)
	case 6:
		at = time.Unix(0, math.MaxInt64).Add(time.Duration(rng.Int64N(int64(4*time.Second))) - 2*time.Second)
	case 7:
		at = time.Unix(0, rng.Int64())
	default:
		at = pivot.Add(time.Duration(rng.Int64N(int64(2*time.Minute))) - time.Minute)
	}
	return at.In(zones[rng.IntN(len(zones))])
}

// TestA14SyncedUpToDifferential compares SyncedUpTo(at) with
// !at.After(SyncedAt()) over random times and random table states: fresh,
// filled by hand (fixed clock), given a source that failed before any load,
// loaded (to a random nanosecond, monotonic readings and zones included),
// loaded then failing, loaded then filled by hand.
func TestA14SyncedUpToDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	clock := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	for i := range 2000 {
		pivot := time.Unix(0, rng.Int64N(math.MaxInt64/2)+rng.Int64N(math.MaxInt64/2)-math.MaxInt64/4)
		if rng.IntN(2) == 0 {
			pivot = clock.Add(time.Duration(rng.Int64N(int64(time.Hour))) - time.Hour/2)
		}
		tb := routes.New(routes.WithClock(now))
		state := rng.IntN(6)
		switch state {
		case 1:
			if err := tb.Update([]routes.Sandbox{{ID: "pr-1"}}); err != nil {
				t.Fatal(err)
			}
		case 2:
			tb.MarkFailed(pivot, errors.New("down"))
		case 3, 4, 5:
			at := pivot
			if rng.IntN(3) == 0 {
				at = time.Now() // a monotonic reading
				pivot = at
			}
			tb.MarkSynced(at)
			if state == 4 {
				tb.MarkFailed(at.Add(time.Second), errors.New("down"))
			}
			if state == 5 {
				if err := tb.Update([]routes.Sandbox{{ID: "pr-1"}}); err != nil {
					t.Fatal(err)
				}
			}
		}
		for range 50 {
			at := a14Time(rng, pivot)
			want := !at.After(tb.SyncedAt())
			if got := tb.SyncedUpTo(at); got != want {
				t.Fatalf("case %d, state %d (SyncedAt %v): SyncedUpTo(%v) = %v; want %v", i, state, tb.SyncedAt(), at, got, want)
			}
		}
	}
}

// TestA14SyncedUpToWhileSyncing: while one goroutine moves the table's
// sync forward (MarkSynced, and failures in between), readers asking
// SyncedUpTo never see it go back (a time once synced stays synced) nor run
// ahead of the last time marked. Run with -race.
func TestA14SyncedUpToWhileSyncing(t *testing.T) {
	tb := routes.New()
	base := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	var marked, marking atomic.Int64 // the latest time marked, and being marked, in ns since base; -1 before the first
	marked.Store(-1)
	marking.Store(-1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := int64(0); i < 20000; i++ {
			if i%7 == 3 {
				tb.MarkFailed(base.Add(time.Duration(i)), errors.New("down"))
				continue
			}
			marking.Store(i)
			tb.MarkSynced(base.Add(time.Duration(i)))
			marked.Store(i)
		}
		close(stop)
	})
	for r := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			var high int64 = -2 // the latest time seen synced; below every d asked
			for {
				select {
				case <-stop:
					return
				default:
				}
				ceiling := marked.Load()
				d := rng.Int64N(20002) - 1
				ok := tb.SyncedUpTo(base.Add(time.Duration(d)))
				if m := marking.Load(); ok && d > m {
					t.Errorf("synced up to +%dns, beyond the latest mark +%dns", d, m)
					return
				}
				if !ok && d <= high {
					t.Errorf("not synced up to +%dns, after +%dns was", d, high)
					return
				}
				if ok && d > high {
					high = d
				}
				if !ok && d <= ceiling && ceiling >= 0 {
					t.Errorf("not synced up to +%dns, after +%dns was marked", d, ceiling)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestA14MarkSyncedOutOfRange: a push source's proof dated outside the
// range of nanosecond counts (before 1678 or after 2262: a zeroed or
// garbled revision time, an injected clock) must not make the table synced
// up to times the source never proved. markSyncedLocked stores
// at.UnixNano(), which wraps around there: a proof dated 1600 makes the
// table synced up to 2184, and SyncedUpTo agrees, so readers decide
// messages of today on a table that has proved nothing of today. (In
// routes/table.go before #14's change; SyncedUpTo inherits it.)
func TestA14MarkSyncedOutOfRange(t *testing.T) {
	for _, proof := range []time.Time{
		time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC),
		{},
	} {
		tb := routes.New()
		tb.MarkSynced(proof)
		now := time.Now()
		if tb.SyncedUpTo(now) {
			t.Errorf("MarkSynced(%v): SyncedUpTo(now) = true (SyncedAt %v); a proof of %d says nothing of now",
				proof, tb.SyncedAt(), proof.Year())
		}
	}
}
