package sqlroute_test

import (
	"strings"
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
// The target is the database as its server names it (host:port/database,
// no credentials).
func TestRoutedRecordNamesTheDatabase(t *testing.T) {
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		rec, logger := audittest.New()
		r := w.router(t, sqlroute.WithLogger(logger))
		if _, err := r.ExecContext(sandboxCtx("a"), w.q("INSERT INTO items (owner) VALUES (?)"), "a"); err != nil {
			t.Fatal(err)
		}
		// The database a's connection string names, as its server says.
		q := "SELECT DATABASE()"
		if w.dialect == "postgres" {
			q = "SELECT current_database()"
		}
		var db string
		if err := w.direct["a"].QueryRow(q).Scan(&db); err != nil {
			t.Fatal(err)
		}
		routed := 0
		for _, m := range rec.Records() {
			if m[pub.KeyDecision] != string(pub.Routed) {
				continue
			}
			routed++
			if m[pub.KeyID] != "a" || m[pub.KeyActor] != "alice" || !strings.HasSuffix(m[pub.KeyTarget], "/"+db) || strings.Contains(m[pub.KeyTarget], "@") || m[pub.KeyReason] == "" {
				t.Errorf("routed record %v: want sandbox a, actor alice, the target .../%s and a reason", m, db)
			}
		}
		if routed != 1 {
			t.Errorf("%d routed records, want 1", routed)
		}
	})
}
