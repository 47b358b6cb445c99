package provision_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// On MariaDB, database names are case-sensitive (lower_case_table_names
// 0, the Linux default) but information_schema compares them without
// case. Databases whose names differ from a sandbox's only in case, even
// carrying a copy of its marker or the creation mark, are not the
// provisioner's: Open, Destroy and Reap work on the sandbox's own database
// and never touch them. (Failed before the fix: Reap dropped the twins
// carrying the creation mark, whose names do not start with the prefix.)
func TestAttackMySQLCaseTwins(t *testing.T) {
	e := mytest.Server(t)
	var lctn int
	if err := e.Admin.QueryRow("SELECT @@lower_case_table_names").Scan(&lctn); err != nil {
		t.Fatal(err)
	}
	if lctn != 0 {
		t.Skipf("lower_case_table_names = %d: names are not case-sensitive here", lctn)
	}
	ctx := context.Background()
	clk := clocktest.New()
	p := newMySQL(t, e.DSN(""), provision.WithPrefix(e.Prefix), provision.WithReapGrace(time.Minute), provision.WithClock(clk.Now))
	name, err := p.Name("pr-1")
	if err != nil {
		t.Fatal(err)
	}
	marker := `sandboxkit/dbroute sandbox="pr-1" created=` + clk.Now().Format(time.RFC3339)
	twins := map[string]string{
		strings.ToUpper(name):                  marker,
		strings.ToUpper(name[:1]) + name[1:]:   "sandboxkit/dbroute creating",
		name[:len(name)-4] + "PR_1":            "",
		strings.ToUpper(e.Prefix) + "gone":     "sandboxkit/dbroute creating",
		strings.ToUpper(e.Prefix) + "template": "",
	}
	for twin, comment := range twins {
		e.Exec(t, "CREATE DATABASE "+mytest.Quote(twin)+" COMMENT '"+comment+"'")
		e.Exec(t, "CREATE TABLE "+mytest.Quote(twin)+".keep (v int)")
	}
	check := func(when string) {
		t.Helper()
		for twin := range twins {
			if n := e.Count(t, "SELECT COUNT(*) FROM information_schema.TABLES WHERE BINARY TABLE_SCHEMA = ? AND TABLE_NAME = 'keep'", twin); n != 1 {
				t.Errorf("%s: foreign database %s lost its table", when, twin)
			}
		}
	}
	if _, err := p.Open(ctx, "pr-1", ""); err != nil {
		t.Fatalf("Open beside the twins: %v", err)
	}
	if c, _ := mysqlComment(t, e, name); c != marker {
		t.Errorf("the sandbox's database: comment %q, want %q", c, marker)
	}
	check("after Open")
	list, err := p.Provisioned(ctx)
	if err != nil || len(list) != 1 || list[0].Name != name || list[0].Incomplete {
		t.Errorf("Provisioned = %+v, %v; want only %s, finished", list, err, name)
	}
	if err := p.Destroy(ctx, "pr-1"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	check("after Destroy")
	if _, err := p.Open(ctx, "pr-1", ""); err != nil {
		t.Fatalf("Open again: %v", err)
	}
	clk.Advance(time.Hour)
	table, err := routes.NewStatic(nil, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if dropped, err := p.Reap(ctx, table); err != nil || !slices.Equal(dropped, []string{"pr-1"}) {
		t.Errorf("Reap = %v, %v; want [pr-1]", dropped, err)
	}
	check("after Reap")
	var left []string
	for _, db := range e.Databases(t) {
		if _, ok := twins[db]; !ok {
			left = append(left, db)
		}
	}
	if len(left) != 0 {
		t.Errorf("databases left besides the twins: %v", left)
	}
}

// threeTables is a migration making three tables, items in the middle, so
// that DROP DATABASE has some to drop before and after it.
var threeTables = provision.MySQLMigration{Version: "1", Apply: func(ctx context.Context, c *sql.Conn) error {
	for _, q := range []string{"CREATE TABLE aa (v int)", mytest.ItemsDDL, "CREATE TABLE zz (v int)"} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}}

// fkFromOutside creates database foreign with a table whose foreign key
// references the items table of database name; it is dropped first at the
// end of the test.
func fkFromOutside(t *testing.T, e *mytest.Env, foreign, name string) {
	t.Helper()
	e.Exec(t, "CREATE DATABASE "+mytest.Quote(foreign))
	t.Cleanup(func() { e.Exec(t, "DROP DATABASE "+mytest.Quote(foreign)) })
	e.Exec(t, "CREATE TABLE "+mytest.Quote(foreign)+".child (item BIGINT, CONSTRAINT child_item FOREIGN KEY (item) REFERENCES "+mytest.Quote(name)+".items (id)) ENGINE=InnoDB")
}

func tables(t *testing.T, e *mytest.Env, db string) int {
	t.Helper()
	return e.Count(t, "SELECT COUNT(*) FROM information_schema.TABLES WHERE BINARY TABLE_SCHEMA = ?", db)
}

// A table of another database referencing a sandbox's table by foreign key
// makes MariaDB's DROP DATABASE fail after dropping some of the tables.
// Destroy must refuse before dropping anything, naming the reference, and
// the sandbox's database stay whole. (Failed before the fix: Destroy
// failed half-way, and the next Open returned the database, still marked
// finished, with one table of three.)
func TestAttackMySQLForeignKeyFromOutside(t *testing.T) {
	e := mytest.Server(t)
	ctx := context.Background()
	p, err := provision.NewMySQLDatabasePerSandbox(e.DSN(""), threeTables, provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Open(ctx, "pr-1", ""); err != nil {
		t.Fatal(err)
	}
	name, _ := p.Name("pr-1")
	fkFromOutside(t, e, e.Name("foreign"), name)
	if err := p.Destroy(ctx, "pr-1"); err == nil || !strings.Contains(err.Error(), "child_item") {
		t.Errorf("Destroy referenced from outside: err = %v, want one naming the foreign key", err)
	}
	if n := tables(t, e, name); n != 3 {
		t.Errorf("the sandbox's database has %d tables of 3 after the refused Destroy", n)
	}
	if c, _ := mysqlComment(t, e, name); !strings.Contains(c, `sandbox="pr-1"`) {
		t.Errorf("the sandbox's database: comment %q, want its marker", c)
	}
	e.Exec(t, "DROP TABLE "+mytest.Quote(e.Name("foreign"))+".child")
	if err := p.Destroy(ctx, "pr-1"); err != nil {
		t.Errorf("Destroy once nothing references it: %v", err)
	}
}

// An admin user whose privileges cover only the provisioner's databases
// does not see the foreign keys of other databases, so DROP DATABASE fails
// half-way. What is left must not pass for a finished database: the next
// Open must not hand out a database with tables missing. (Failed before
// the fix: Open returned it, marked finished, with one table of three.)
func TestAttackMySQLHalfDropped(t *testing.T) {
	e := mytest.Server(t)
	ctx := context.Background()
	user := e.Name("u")
	e.Exec(t, "CREATE USER '"+user+"'@'%'")
	t.Cleanup(func() { e.Exec(t, "DROP USER '"+user+"'@'%'") })
	e.Exec(t, "GRANT ALL PRIVILEGES ON `"+e.Prefix+"%`.* TO '"+user+"'@'%'")
	cfg := e.Config("")
	cfg.User, cfg.Passwd = user, ""
	p, err := provision.NewMySQLDatabasePerSandbox(cfg.FormatDSN(), threeTables, provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Open(ctx, "pr-1", ""); err != nil {
		t.Fatal(err)
	}
	name, _ := p.Name("pr-1")
	fkFromOutside(t, e, e.Name("foreign"), name)
	if err := p.Destroy(ctx, "pr-1"); err == nil {
		t.Fatal("Destroy succeeded though a foreign key references the database")
	}
	if n := tables(t, e, name); n == 3 {
		t.Skip("DROP DATABASE failed before dropping any table: nothing half-done to look at")
	}
	if _, err := p.Open(ctx, "pr-1", ""); err == nil {
		t.Errorf("Open handed out the half-dropped database (%d tables of 3)", tables(t, e, name))
	}
	e.Exec(t, "DROP TABLE "+mytest.Quote(e.Name("foreign"))+".child")
	if _, err := p.Open(ctx, "pr-1", ""); err != nil {
		t.Fatalf("Open once nothing references it: %v", err)
	}
	if n := tables(t, e, name); n != 3 {
		t.Errorf("the database made again has %d tables, want 3", n)
	}
}

// The MySQL twin of TestAttackOddNamesWithCreationMark: databases under
// the prefix with the creation mark but names the library never produces
// (upper case, a backtick, a hyphen, non-ASCII) are left alone by Reap.
// (Failed before the fix: Reap dropped them.)
func TestAttackMySQLOddNamesWithCreationMark(t *testing.T) {
	e := mytest.Server(t)
	ctx := context.Background()
	odd := []string{e.Prefix + "Prod", e.Prefix + "a`b", e.Prefix + "a-b", e.Prefix + "ü"}
	for _, name := range odd {
		e.Exec(t, "CREATE DATABASE "+mytest.Quote(name)+" COMMENT 'sandboxkit/dbroute creating'")
	}
	p := newMySQL(t, e.DSN(""), provision.WithPrefix(e.Prefix))
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	if dropped, err := p.Reap(ctx, table); err != nil || len(dropped) != 0 {
		t.Errorf("Reap = %v, %v; want nothing", dropped, err)
	}
	want := slices.Clone(odd)
	slices.Sort(want)
	got := e.Databases(t)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("after Reap: %v, want %v", got, want)
	}
}

// A Destroy whose connection is cut after it put the creation mark back
// and before DROP DATABASE (the window a crash mid-drop falls in) leaves a
// database taken for an interrupted creation: listed incomplete, and the
// next request drops it and creates it whole.
func TestAttackMySQLDestroyCut(t *testing.T) {
	e := mytest.Server(t)
	ctx := context.Background()
	proxy := e.NewProxy(t)
	cutting, err := provision.NewMySQLDatabasePerSandbox(proxy.DSN(e, ""), threeTables, provision.WithPrefix(e.Prefix),
		provision.WithStepHook(func(s string) {
			if s == "drop-marked" {
				proxy.Cut()
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cutting.Close()
	if _, err := cutting.Open(ctx, "pr-1", ""); err != nil {
		t.Fatal(err)
	}
	name, _ := cutting.Name("pr-1")
	e.Exec(t, "INSERT INTO "+mytest.Quote(name)+".items (owner) VALUES ('pr-1')")
	if err := cutting.Destroy(ctx, "pr-1"); !errors.Is(err, dbroute.ErrUnavailable) {
		t.Errorf("Destroy cut short: err = %v, want ErrUnavailable", err)
	}
	if c, ok := mysqlComment(t, e, name); !ok || c != "sandboxkit/dbroute creating" {
		t.Fatalf("after the cut: comment %q (exists %v), want the creation mark", c, ok)
	}
	p := newMySQL(t, e.DSN(""), provision.WithPrefix(e.Prefix))
	if list, err := p.Provisioned(ctx); err != nil || len(list) != 1 || !list[0].Incomplete {
		t.Errorf("Provisioned = %+v, %v; want pr-1 incomplete", list, err)
	}
	p2, err := provision.NewMySQLDatabasePerSandbox(e.DSN(""), threeTables, provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if _, err := p2.Open(ctx, "pr-1", ""); err != nil {
		t.Fatal(err)
	}
	if n := tables(t, e, name); n != 3 {
		t.Errorf("made again with %d tables, want 3", n)
	}
	if n := e.Count(t, "SELECT COUNT(*) FROM "+mytest.Quote(name)+".items"); n != 0 {
		t.Errorf("made again with %d rows, want a fresh database", n)
	}
}
