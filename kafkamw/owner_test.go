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
	}
	// Past the expiry on the table's clock, the expired sandbox is gone.
	now = t0.Add(35 * time.Minute)
	if who, why := ownerOf(table, "orders", "expiring", at(29)); who != ownerNone || why != unknownSandbox {
		t.Errorf("expired sandbox decided after its expiry: %d (%v), want no one", who, why)
	}
	if who, _ := ownerOf(table, "orders", "own-expiring", at(29)); who != ownerSandbox {
		t.Errorf("a message within an expired sandbox's route window: %d, want its reader's", who)
	}
}
