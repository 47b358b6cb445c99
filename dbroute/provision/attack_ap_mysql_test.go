package provision_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

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
