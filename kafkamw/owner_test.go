package kafkamw

import (
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestOwnerOf: the decision over a sandbox's whole life, from the route
// table alone.
func TestOwnerOf(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	now := t0
	table := routes.New(routes.WithClock(func() time.Time { return now }))
	route := func(from, removed time.Time) map[string]routes.Route {
		return map[string]routes.Route{"orders": {Upstream: "10.0.0.1:9090", ActiveFrom: from, RemovedAt: removed}}
	}
	if err := table.Update([]routes.Sandbox{
		{ID: "own", Services: route(t0.Add(10*time.Minute), t0.Add(20*time.Minute))}, // overrides orders in [10m, 20m)
		{ID: "plain"}, // exists, overrides nothing
		{ID: "expiring", Expires: t0.Add(30 * time.Minute)},
		{ID: "own-expiring", Expires: t0.Add(30 * time.Minute), Services: route(t0, time.Time{})},
		{ID: "gone", Services: route(t0, time.Time{})},
		{ID: "gone-plain"},
	}); err != nil {
		t.Fatal(err)
	}
	// gone and gone-plain are removed at 40m: gone's route stays as a
	// tombstone, gone-plain leaves nothing.
	now = t0.Add(40 * time.Minute)
	if err := table.Update([]routes.Sandbox{
		{ID: "own", Services: route(t0.Add(10*time.Minute), t0.Add(20*time.Minute))},
		{ID: "plain"},
		{ID: "expiring", Expires: t0.Add(30 * time.Minute)},
		{ID: "own-expiring", Expires: t0.Add(30 * time.Minute), Services: route(t0, time.Time{})},
	}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(25 * time.Minute) // decided before the expiry, after the removal in the document
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	var memo ownerMemo
	for _, tc := range []struct {
		id   string
		at   time.Time
		want owner
		why  orphan
	}{
		{"own", at(5), ownerBaseline, notOrphan},  // before its window: exists, baseline with context
		{"own", at(10), ownerSandbox, notOrphan},  // window start included
		{"own", at(19), ownerSandbox, notOrphan},  //
		{"own", at(20), ownerBaseline, notOrphan}, // window end excluded
		{"plain", at(5), ownerBaseline, notOrphan},
		{"expiring", at(29), ownerBaseline, notOrphan},
		{"expiring", at(30), ownerNone, expiredSandbox}, // a message stamped at or after the expiry
		{"own-expiring", at(29), ownerSandbox, notOrphan},
		{"own-expiring", at(31), ownerNone, expiredSandbox},
		{"gone", at(39), ownerSandbox, notOrphan}, // produced before the removal: its reader's still
		{"gone", at(41), ownerNone, goneSandbox},  // removed, then a late message
		{"gone-plain", at(39), ownerNone, unknownSandbox},
		{"never", at(5), ownerNone, unknownSandbox},
	} {
		who, why := ownerOf(table, "orders", tc.id, tc.at)
		if who != tc.want || why != tc.why {
			t.Errorf("ownerOf(%s at %s) = %d (%v), want %d (%v)", tc.id, tc.at.Sub(t0), who, why, tc.want, tc.why)
		}
		// The decision is the table's alone: the same for every reader,
		// and the same when asked again (a restarted reader).
		if who2, why2 := ownerOf(table, "orders", tc.id, tc.at); who2 != who || why2 != why {
			t.Errorf("ownerOf(%s) changed between two calls", tc.id)
		}
		// The memo a reader decides with answers alike, on a miss and on
		// the hit that follows.
		for range 2 {
			if who2, why2 := memo.of(table, "orders", tc.id, tc.at); who2 != who || why2 != why {
				t.Errorf("ownerMemo.of(%s at %s) = %d (%v), ownerOf says %d (%v)", tc.id, tc.at.Sub(t0), who2, why2, who, why)
			}
		}
	}
	// Past the expiry on the table's clock, the expired sandbox is gone.
	// The memo, warm with both sandboxes, follows the clock.
	memo.of(table, "orders", "expiring", at(29))
	now = t0.Add(35 * time.Minute)
	if who, why := ownerOf(table, "orders", "expiring", at(29)); who != ownerNone || why != unknownSandbox {
		t.Errorf("expired sandbox decided after its expiry: %d (%v), want no one", who, why)
	}
	if who, why := memo.of(table, "orders", "expiring", at(29)); who != ownerNone || why != unknownSandbox {
		t.Errorf("memo: expired sandbox decided after its expiry: %d (%v), want no one", who, why)
	}
	if who, _ := ownerOf(table, "orders", "own-expiring", at(29)); who != ownerSandbox {
		t.Errorf("a message within an expired sandbox's route window: %d, want its reader's", who)
	}
	if who, _ := memo.of(table, "orders", "own-expiring", at(29)); who != ownerSandbox {
		t.Errorf("memo: a message within an expired sandbox's route window: %d, want its reader's", who)
	}
}

// TestOwnerMemoFollowsTable: a memo warm with a sandbox's facts answers
// from the table's new content after every change: the route ended,
// the sandbox removed, then back with an expiry.
func TestOwnerMemoFollowsTable(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	now := t0
	table := routes.New(routes.WithClock(func() time.Time { return now }))
	update := func(sbs ...routes.Sandbox) {
		t.Helper()
		if err := table.Update(sbs); err != nil {
			t.Fatal(err)
		}
	}
	var memo ownerMemo
	check := func(step string, at time.Time) {
		t.Helper()
		for _, id := range []string{"pr-1", "pr-2"} {
			want, wantWhy := ownerOf(table, "orders", id, at)
			for range 2 {
				if got, why := memo.of(table, "orders", id, at); got != want || why != wantWhy {
					t.Errorf("%s: ownerMemo.of(%s) = %d (%v), ownerOf says %d (%v)", step, id, got, why, want, wantWhy)
				}
			}
		}
	}
	orders := map[string]routes.Route{"orders": {Upstream: "10.0.0.1:9090", ActiveFrom: t0}}
	update(routes.Sandbox{ID: "pr-1", Services: orders}, routes.Sandbox{ID: "pr-2"})
	check("overriding", t0.Add(time.Minute))
	now = t0.Add(2 * time.Minute)
	update(routes.Sandbox{ID: "pr-1"}, routes.Sandbox{ID: "pr-2"}) // pr-1's route removed
	check("route removed", t0.Add(3*time.Minute))
	if who, _ := memo.of(table, "orders", "pr-1", t0.Add(3*time.Minute)); who != ownerBaseline {
		t.Errorf("after the route's removal: %d, want the baseline's", who)
	}
	now = t0.Add(4 * time.Minute)
	update(routes.Sandbox{ID: "pr-2"}) // pr-1 removed
	check("sandbox removed", t0.Add(5*time.Minute))
	now = t0.Add(6 * time.Minute)
	update(routes.Sandbox{ID: "pr-1", Expires: t0.Add(10 * time.Minute)}, routes.Sandbox{ID: "pr-2"})
	check("back, expiring", t0.Add(7*time.Minute))
	now = t0.Add(11 * time.Minute) // expired on the table's clock, content unchanged
	check("expired", t0.Add(7*time.Minute))
}
