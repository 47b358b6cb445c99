package provision_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

// mysqlItems is a migration creating the items table, counting its runs.
func mysqlItems(applied *atomic.Int32) provision.MySQLMigration {
	return provision.MySQLMigration{Version: "1", Apply: func(ctx context.Context, c *sql.Conn) error {
		if applied != nil {
			applied.Add(1)
		}
		_, err := c.ExecContext(ctx, mytest.ItemsDDL)
		return err
	}}
}

func newMySQL(t *testing.T, dsn string, opts ...provision.ProvisionerOption) *provision.MySQLDatabasePerSandbox {
	t.Helper()
	p, err := provision.NewMySQLDatabasePerSandbox(dsn, mysqlItems(nil), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// comment is the comment of database name, and whether it exists.
func mysqlComment(t *testing.T, e *mytest.Env, name string) (string, bool) {
	t.Helper()
	var c string
	err := e.Admin.QueryRowContext(context.Background(), "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&c)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, true
}

// A router over the provisioner writes a sandbox's rows into the
// sandbox's own database, created and migrated once on first use;
// Destroy and Reap drop what the provisioner made and nothing else.
func TestMySQLDatabasePerSandbox(t *testing.T) {
	e := mytest.Server(t)
	var applied atomic.Int32
	p, err := provision.NewMySQLDatabasePerSandbox(e.DSN(""), mysqlItems(&applied), provision.WithPrefix(e.Prefix), provision.WithReapGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	e.CreateDB(t, e.Name("base"), mytest.ItemsDDL)
	base := sql.OpenDB(sqlroute.Guard(e.Connector(t, e.Name("base"))))
	defer base.Close()
	r, err := sqlroute.New(base, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, id := range []string{"pr-1", "pr-2"} {
		for range 3 {
			if _, err := r.ExecContext(pgtest.SandboxCtx(id), "INSERT INTO items (owner) VALUES (?)", id); err != nil {
				t.Fatal(err)
			}
		}
	}
	if applied.Load() != 2 {
		t.Errorf("migration ran %d times, want 2", applied.Load())
	}
	name, _ := p.Name("pr-1")
	if n := e.Count(t, "SELECT COUNT(*) FROM "+mytest.Quote(name)+".items WHERE owner = 'pr-1'"); n != 3 {
		t.Errorf("pr-1 database holds %d rows, want 3", n)
	}
	if n := e.Count(t, "SELECT COUNT(*) FROM "+mytest.Quote(e.Name("base"))+".items"); n != 0 {
		t.Errorf("baseline holds %d rows, want 0", n)
	}
	// A database of a sandbox's name that is not ours.
	foreign, _ := p.Name("theirs")
	e.Exec(t, "CREATE DATABASE "+mytest.Quote(foreign))
	if _, err := r.ExecContext(pgtest.SandboxCtx("theirs"), "SELECT 1"); !errors.Is(err, dbroute.ErrNotOwned) || !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("foreign database: %v, want ErrNotOwned and ErrNoTestDatabase", err)
	}
	if err := p.Destroy(context.Background(), "theirs"); !errors.Is(err, dbroute.ErrNotOwned) {
		t.Errorf("Destroy of a foreign database: %v, want ErrNotOwned", err)
	}
	got, err := p.Provisioned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range got {
		ids = append(ids, g.ID)
	}
	if !slices.Equal(ids, []string{"pr-1", "pr-2"}) {
		t.Errorf("Provisioned = %v, want pr-1, pr-2", ids)
	}
	if err := p.Destroy(context.Background(), "pr-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := mysqlComment(t, e, name); ok {
		t.Error("Destroy left the database")
	}
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := p.Reap(context.Background(), table)
	if err != nil || !slices.Equal(dropped, []string{"pr-2"}) {
		t.Errorf("Reap = %v, %v; want [pr-2]", dropped, err)
	}
	if _, ok := mysqlComment(t, e, foreign); !ok {
		t.Error("Reap dropped a database that is not ours")
	}
	// The router closed pr-2's *sql.DB before Reap dropped it: the next
	// request makes a fresh database.
	if _, err := r.ExecContext(pgtest.SandboxCtx("pr-2"), "INSERT INTO items (owner) VALUES ('again')"); err != nil {
		t.Fatalf("after Reap: %v", err)
	}
}

// The admin connection cut after each step of a creation leaves a
// database marked as ours (or nothing): the next Open finishes it with
// the migration applied to a clean database, and Destroy and Reap drop
// it. The cut is what the server sees when the process dies.
func TestMySQLInterrupted(t *testing.T) {
	for _, step := range []string{"created", "migrated", "commented"} {
		for _, then := range []string{"open", "destroy", "reap"} {
			t.Run(step+"/"+then, func(t *testing.T) {
				e := mytest.Server(t)
				proxy := e.NewProxy(t)
				cutting := newMySQL(t, proxy.DSN(e, ""), provision.WithPrefix(e.Prefix), provision.WithReapGrace(time.Hour),
					provision.WithStepHook(func(s string) {
						if s == step {
							proxy.Cut()
						}
					}))
				ctx := context.Background()
				_, err := cutting.Open(ctx, "pr-7", "")
				name, _ := cutting.Name("pr-7")
				c, exists := mysqlComment(t, e, name)
				switch {
				case step == "commented":
					// Cut after the last step: the database is finished
					// (the hook runs once the marker is set).
					if !strings.Contains(c, `sandbox="pr-7"`) {
						t.Fatalf("after the last step: comment %q (exists %v), err %v", c, exists, err)
					}
				case err == nil || !errors.Is(err, dbroute.ErrUnavailable):
					t.Fatalf("cut at %s: Open = %v, want ErrUnavailable", step, err)
				case c != "sandboxkit/dbroute creating":
					t.Fatalf("cut at %s: comment %q (exists %v), want the creation mark", step, c, exists)
				}
				p := newMySQL(t, e.DSN(""), provision.WithPrefix(e.Prefix), provision.WithReapGrace(time.Hour))
				if step != "commented" {
					got, err := p.Provisioned(ctx)
					if err != nil || len(got) != 1 || !got[0].Incomplete || got[0].ID != "pr-7" {
						t.Fatalf("Provisioned = %+v, %v; want pr-7 incomplete", got, err)
					}
				}
				switch then {
				case "open":
					if _, err := p.Open(ctx, "pr-7", ""); err != nil {
						t.Fatalf("Open after the cut: %v", err)
					}
					c, _ := mysqlComment(t, e, name)
					if !strings.Contains(c, `sandbox="pr-7"`) {
						t.Errorf("after recovery: comment %q", c)
					}
					// The items table exists once (a re-run migration on a
					// half-migrated database would have failed).
					if n := e.Count(t, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'items'", name); n != 1 {
						t.Errorf("items tables: %d", n)
					}
				case "destroy":
					if err := p.Destroy(ctx, "pr-7"); err != nil {
						t.Fatal(err)
					}
					if _, ok := mysqlComment(t, e, name); ok {
						t.Error("Destroy left the database")
					}
				case "reap":
					table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-7"}})
					if err != nil {
						t.Fatal(err)
					}
					dropped, err := p.Reap(ctx, table)
					if err != nil {
						t.Fatal(err)
					}
					_, ok := mysqlComment(t, e, name)
					if step == "commented" {
						// Finished, live, within the grace: kept.
						if !ok || len(dropped) != 0 {
							t.Errorf("Reap dropped a finished live database: %v", dropped)
						}
					} else if ok || !slices.Equal(dropped, []string{"pr-7"}) {
						t.Errorf("Reap = %v, database left %v; want the interrupted one dropped", dropped, ok)
					}
				}
			})
		}
	}
}

func TestMySQLConfig(t *testing.T) {
	if _, err := provision.NewMySQLDatabasePerSandbox("not a dsn", provision.MySQLMigration{}); !errors.Is(err, dbroute.ErrConfig) {
		t.Errorf("bad DSN: %v, want ErrConfig", err)
	}
	if _, err := provision.NewMySQLDatabasePerSandbox(mytest.DefaultDSN, provision.MySQLMigration{}, provision.WithPrefix("Bad")); !errors.Is(err, dbroute.ErrConfig) {
		t.Errorf("bad prefix: %v, want ErrConfig", err)
	}
	p, err := provision.NewMySQLDatabasePerSandbox(mytest.DefaultDSN, provision.MySQLMigration{}, nil)
	if err != nil {
		t.Fatalf("nil option: %v", err)
	}
	p.Close()
}
