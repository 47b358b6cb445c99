package provision_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/routes"
)

// interruptDrop leaves database name as a DROP DATABASE cut short leaves
// it on PostgreSQL 15.4 and later: the drop's first step, committed on its
// own before the files go, marks it invalid (datconnlimit -2); only DROP
// works on it then. (Killing a backend at that exact point cannot be timed
// from a test; the catalog state is the same.)
func interruptDrop(t *testing.T, e *pgtest.Env, name string) {
	t.Helper()
	e.Exec(t, "UPDATE pg_database SET datconnlimit = -2 WHERE datname = $1", name)
}

// A Destroy or Reap interrupted in the middle of its DROP DATABASE leaves
// the sandbox's database invalid. The next request for the sandbox must
// finish the drop and create a fresh database, as it finishes an
// interrupted creation. (Failed before the fix: every request failed for
// good with "cannot connect to invalid database".) A foreign invalid
// database of the name is still refused, and left alone; so is a template
// left invalid with the current version's marker rebuilt.
func TestAttackInterruptedDrop(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	ctx := context.Background()
	newProvider := func() *provision.DatabasePerSandbox {
		p, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	p := newProvider()
	r := e.Router(t, p)
	insert := func(r *dbroute.Router, id string) error {
		_, err := r.Exec(pgtest.SandboxCtx(id), "INSERT INTO items (owner) VALUES ($1)", id)
		return err
	}
	if err := insert(r, "pr-1"); err != nil {
		t.Fatal(err)
	}
	name := expectedName(e, "pr-1")
	interruptDrop(t, e, name)
	r2 := e.Router(t, p) // a fresh router: no pool of the sandbox yet
	if err := insert(r2, "pr-1"); err != nil {
		t.Fatalf("after an interrupted drop: %v", err)
	}
	if n := pgtest.Count(t, e.DSN(name), "SELECT count(*) FROM items"); n != 1 {
		t.Errorf("the database made again has %d rows, want 1 (the new one)", n)
	}
	if _, allow, limit, _ := e.DBState(t, name); !allow || limit != -1 {
		t.Errorf("the database made again: allow connections %v, limit %d; want true, -1", allow, limit)
	}

	// Not ours: refused, untouched.
	foreign := expectedName(e, "foreign")
	e.CreateDB(t, foreign, `CREATE TABLE keep (v int)`)
	interruptDrop(t, e, foreign)
	if _, err := p.Open(ctx, "foreign", ""); !errors.Is(err, dbroute.ErrNotOwned) {
		t.Errorf("Open over a foreign invalid database: err = %v, want ErrNotOwned", err)
	}
	if err := p.Destroy(ctx, "foreign"); !errors.Is(err, dbroute.ErrNotOwned) {
		t.Errorf("Destroy of a foreign invalid database: err = %v, want ErrNotOwned", err)
	}
	if _, _, limit, exists := e.DBState(t, foreign); !exists || limit != -2 {
		t.Errorf("foreign invalid database: exists %v, limit %d; want it as it was", exists, limit)
	}

	// The template, left invalid with the current marker: a new process
	// rebuilds it rather than fail every clone.
	interruptDrop(t, e, p.Template())
	p2 := newProvider()
	if _, err := p2.Open(ctx, "pr-2", ""); err != nil {
		t.Fatalf("with the template left invalid: %v", err)
	}
	if _, _, limit, _ := e.DBState(t, p.Template()); limit == -2 {
		t.Error("the template is still invalid")
	}
}

// Two processes whose admin connection strings name different maintenance
// databases take their advisory locks in different databases, where they
// do not meet. The reaper must still not drop the database whose creation
// the other is in the middle of (it is incomplete, and a moment later the
// sandbox's data is in it). (Failed before the fix: Reap dropped it, and
// the creation survived only by taking the vanished database for a
// vanished template and starting again.)
func TestAttackLocksAcrossMaintenanceDatabases(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	ctx := context.Background()
	reached := make(chan struct{})
	resume := make(chan struct{})
	var creations atomic.Int32
	hook := provision.WithStepHook(func(s string) {
		if s == "created" && creations.Add(1) == 1 {
			close(reached)
			<-resume
		}
	})
	creator, err := provision.NewDatabasePerSandbox(e.DSN("postgres"), pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix), hook)
	if err != nil {
		t.Fatal(err)
	}
	defer creator.Close()
	// Not template1: a session there would make other tests' CREATE
	// DATABASE fail.
	reaper, err := provision.NewDatabasePerSandbox(e.DSN(pgtest.SchemasDB()), pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer reaper.Close()
	done := make(chan error, 1)
	go func() { _, err := creator.Open(ctx, "pr-1", ""); done <- err }()
	<-reached
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	dropped, rerr := reaper.Reap(ctx, table)
	if len(dropped) != 0 {
		t.Errorf("Reap dropped %v, whose creation was in progress in another process", dropped)
	}
	if rerr == nil || !strings.Contains(rerr.Error(), "same database") {
		t.Errorf("Reap beside a process locking in another database: err = %v, want one naming the misconfiguration", rerr)
	}
	_, oerr := reaper.Open(ctx, "pr-1", "")
	if !errors.Is(oerr, dbroute.ErrNoTestDatabase) || !strings.Contains(fmt.Sprint(oerr), "same database") {
		t.Errorf("Open beside a process locking in another database: err = %v, want ErrNoTestDatabase naming the misconfiguration", oerr)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Errorf("creation: %v", err)
	}
	if n := creations.Load(); n != 1 {
		t.Errorf("the database was created %d times, want 1", n)
	}
	if _, err := reaper.Open(ctx, "pr-1", ""); err != nil {
		t.Errorf("Open once the other process is done: %v", err)
	}
}

// A migration version full of quotes, backslashes, SQL and non-ASCII text
// is recorded in the template's marker as is: a second process recognises
// the template (no rebuild, the migration ran once) and nothing else runs.
func TestAttackHostileVersion(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	ctx := context.Background()
	version := "v1'; DROP DATABASE " + pgtest.BaselineDB() + "; -- \\' \\\\ \" E'x' $$ $q$ ünï\u2028\x00\x7f"
	var applied atomic.Int32
	for i := range 2 {
		p, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration(version, &applied), provision.WithPrefix(e.Prefix))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Open(ctx, fmt.Sprintf("pr-%d", i), ""); err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
		p.Close()
	}
	if n := applied.Load(); n != 1 {
		t.Errorf("the migration ran %d times, want 1 (the second process did not recognise the template's marker)", n)
	}
	if _, _, _, exists := e.DBState(t, pgtest.BaselineDB()); !exists {
		t.Error("the baseline database is gone")
	}
}

// With the server unreachable, Destroy, Reap and Provisioned fail with an
// error a periodic reaper can tell from a refusal: one wrapping
// ErrUnavailable (transient), not ErrNotOwned. (Failed before the fix:
// the errors were the driver's, unclassified.)
func TestAttackMaintenanceUnavailable(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			dsn := "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=5"
			var p reclaimCloser
			var err error
			if k.name == "database-per-sandbox" {
				p, err = provision.NewDatabasePerSandbox(dsn, pgtest.ItemsMigration("v1", nil))
			} else {
				p, err = provision.NewSchemaPerSandbox(dsn, pgtest.ItemsMigration("v1", nil))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx := context.Background()
			table, err := routes.NewStatic(nil)
			if err != nil {
				t.Fatal(err)
			}
			_, perr := p.Provisioned(ctx)
			_, rerr := p.Reap(ctx, table)
			for what, err := range map[string]error{"Destroy": p.Destroy(ctx, "pr-1"), "Provisioned": perr, "Reap": rerr} {
				if !errors.Is(err, dbroute.ErrUnavailable) || errors.Is(err, dbroute.ErrNotOwned) {
					t.Errorf("%s with the server unreachable: err = %v, want ErrUnavailable", what, err)
				}
			}
		})
	}
}

// Databases under the prefix that carry the creation mark but whose names
// the library can never produce (upper case, quotes, a hyphen, non-ASCII,
// 63 bytes without the hash, a hash in upper case) are not interrupted
// creations of the provisioner: Provisioned does not list them and Reap
// leaves them. A genuine interrupted creation beside them, hashed name
// included, is still reclaimed. (Failed before the fix: Reap dropped every
// one of them.)
func TestAttackOddNamesWithCreationMark(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	ctx := context.Background()
	k := kinds[slices.IndexFunc(kinds, func(k kind) bool { return k.name == "database-per-sandbox" })]
	long := strings.Repeat("c", 60) + "-09"
	hashed := expectedName(e, long)
	odd := []string{
		e.Prefix + "Prod",
		e.Prefix + `a"b`,
		e.Prefix + "a-b",
		e.Prefix + "ü",
		e.Prefix + strings.Repeat("d", 63-len(e.Prefix)),
		hashed[:len(hashed)-16] + strings.ToUpper(hashed[len(hashed)-16:]),
		hashed[:len(hashed)-17] + "x" + hashed[len(hashed)-16:],
	}
	for _, name := range odd {
		e.Exec(t, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS false CONNECTION LIMIT 5813")
	}
	killAt(t, e, k, long, "created") // a real one, hashed
	p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))
	defer p.Close()
	list, err := p.Provisioned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != hashed || !list[0].Incomplete {
		t.Errorf("Provisioned = %+v, want only %s, incomplete", list, hashed)
	}
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reap(ctx, table); err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(odd), e.Prefix+"_template")
	slices.Sort(want)
	if got := e.Databases(t); !slices.Equal(got, want) {
		t.Errorf("after Reap: %v, want %v", got, want)
	}
}
