package routes_test

import (
	"math"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestSyncedUpTo checks that Table.SyncedUpTo(at) answers !at.After(SyncedAt())
// for a table never filled, one filled by hand, one with a source that
// has never loaded and one that has, over times at and around the sync
// and at the ends of the range of nanosecond counts (1678 to 2262),
// where its comparison in nanoseconds gives way to SyncedAt's.
func TestSyncedUpTo(t *testing.T) {
	clock := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	synced := time.Date(2026, 12, 7, 3, 59, 0, 123456789, time.UTC)

	fresh := routes.New(routes.WithClock(now))
	byHand, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}}, routes.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	neverLoaded := routes.New(routes.WithClock(now))
	neverLoaded.MarkFailed(synced, errTest)
	loaded := routes.New(routes.WithClock(now))
	loaded.MarkSynced(synced)
	tables := map[string]*routes.Table{"fresh": fresh, "by-hand": byHand, "never-loaded": neverLoaded, "loaded": loaded}

	minNano, maxNano := time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)
	ats := []time.Time{
		{}, // the zero time, year 1
		time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC),
		minNano, minNano.Add(-time.Nanosecond), minNano.Add(time.Second), minNano.Add(2 * time.Second),
		maxNano, maxNano.Add(time.Nanosecond), maxNano.Add(-time.Second), maxNano.Add(-2 * time.Second),
		time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC),
		synced, synced.Add(-time.Nanosecond), synced.Add(time.Nanosecond),
		synced.In(time.FixedZone("UTC+5", 5*3600)), synced.Add(time.Nanosecond).In(time.FixedZone("UTC-7", -7*3600)),
		clock, clock.Add(-time.Nanosecond), clock.Add(time.Nanosecond),
		time.Now(), // with a monotonic reading
		time.Now().Add(-24 * time.Hour), time.Now().Add(24 * time.Hour),
		time.UnixMilli(synced.UnixMilli()), // as kafka-go builds a message's time
		time.UnixMilli(synced.UnixMilli() + 1),
	}
	for name, tb := range tables {
		for _, at := range ats {
			want := !at.After(tb.SyncedAt())
			if got := tb.SyncedUpTo(at); got != want {
				t.Errorf("%s table (SyncedAt %v): SyncedUpTo(%v) = %v; want %v", name, tb.SyncedAt(), at, got, want)
			}
		}
	}
	// The answers the readers depend on, spelled out.
	if !loaded.SyncedUpTo(synced) || loaded.SyncedUpTo(synced.Add(time.Nanosecond)) {
		t.Error("a loaded table is not synced up to its last load's start, or is past it")
	}
	if fresh.SyncedUpTo(synced) || neverLoaded.SyncedUpTo(synced) {
		t.Error("a table that has never loaded is synced up to a message's time")
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("source down")
