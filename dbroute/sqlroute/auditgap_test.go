package sqlroute_test

import (
	"os"
	"testing"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
)

// TestRoutedRecordNamesTheDatabase: the record of a sandbox's first call,
// which opens its test database, names the sandbox's actor, the database
// (target) and why (reason), as dbroute's does ("routed ... sandbox=pr-42
// sandbox.actor=alice target=127.0.0.1:5432/sbx_pr_42 reason=\"opened the
// test database pool\"") and as package audit says of every routed
// record ("Reason names it"). sqlroute's carries the ID alone: the shop's
// audit log shows "sqlroute routed sql sandbox=pr-42" with nothing else.
// A known gap, reported, not fixed here (the target of a MySQL DSN has to
// be written without its password); run with SANDBOXKIT_KNOWN_GAPS=1.
func TestRoutedRecordNamesTheDatabase(t *testing.T) {
	if os.Getenv("SANDBOXKIT_KNOWN_GAPS") != "1" {
		t.Skip("known gap in sqlroute's routed audit record; run with SANDBOXKIT_KNOWN_GAPS=1")
	}
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		rec, logger := audittest.New()
		r := w.router(t, sqlroute.WithLogger(logger))
		if _, err := r.ExecContext(sandboxCtx("a"), w.q("INSERT INTO items (owner) VALUES (?)"), "a"); err != nil {
			t.Fatal(err)
		}
		routed := 0
		for _, m := range rec.Records() {
			if m[pub.KeyDecision] != string(pub.Routed) {
				continue
			}
			routed++
			if m[pub.KeyID] != "a" || m[pub.KeyActor] != "alice" || m[pub.KeyTarget] == "" || m[pub.KeyReason] == "" {
				t.Errorf("routed record %v: want sandbox a, actor alice, a target and a reason", m)
			}
		}
		if routed != 1 {
			t.Errorf("%d routed records, want 1", routed)
		}
	})
}
