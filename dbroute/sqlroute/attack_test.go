package sqlroute_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
)

// TestPreparedStatementsOnOneConnection: several statements prepared with
// a production context on one guarded connection, closed out of order and
// prepared again (the guard reuses one wrapper per connection), each run
// its own query, and each refuses a sandbox context.
func TestPreparedStatementsOnOneConnection(t *testing.T) {
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		bg, sb := context.Background(), sandboxCtx("a")
		cn, err := w.baseline.Conn(bg)
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		ins := w.q("INSERT INTO items (owner, n) VALUES (?, ?)")
		s1, err := cn.PrepareContext(bg, ins)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := cn.PrepareContext(bg, w.q("SELECT COUNT(*) FROM items WHERE owner = ?"))
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		s1.Close()
		s3, err := cn.PrepareContext(bg, w.q("SELECT COUNT(*) + 1000 FROM items WHERE owner = ?"))
		if err != nil {
			t.Fatal(err)
		}
		defer s3.Close()
		if _, err := s1.ExecContext(bg, "prod", 1); err == nil {
			t.Error("a closed statement ran")
		}
		var n2, n3 int
		if err := s2.QueryRowContext(bg, "nobody").Scan(&n2); err != nil || n2 != 0 {
			t.Errorf("s2: %d, %v; want 0", n2, err)
		}
		if err := s3.QueryRowContext(bg, "nobody").Scan(&n3); err != nil || n3 != 1000 {
			t.Errorf("s3: %d, %v; want 1000 (its own query)", n3, err)
		}
		if err := s2.QueryRowContext(sb, "x").Err(); !errors.Is(err, dbroute.ErrSandboxOnBaseline) {
			t.Errorf("s2 with a sandbox context: %v, want ErrSandboxOnBaseline", err)
		}
		if err := s3.QueryRowContext(sb, "x").Err(); !errors.Is(err, dbroute.ErrSandboxOnBaseline) {
			t.Errorf("s3 with a sandbox context: %v, want ErrSandboxOnBaseline", err)
		}
		s4, err := cn.PrepareContext(bg, ins)
		if err != nil {
			t.Fatal(err)
		}
		defer s4.Close()
		if _, err := s4.ExecContext(sb, "sandbox", 1); !errors.Is(err, dbroute.ErrSandboxOnBaseline) {
			t.Errorf("s4 with a sandbox context: %v, want ErrSandboxOnBaseline", err)
		}
		if n := w.count(t, "", "sandbox"); n != 0 {
			t.Errorf("%d sandbox rows reached the baseline", n)
		}
	})
}

// wrapped is an instrumentation wrapper of a driver (as otelsql or
// sqlhooks make): the router cannot name its driver type.
type wrapped struct{ c driver.Connector }

type wrappedDriver struct{ d driver.Driver }

func (w wrapped) Connect(ctx context.Context) (driver.Conn, error) { return w.c.Connect(ctx) }
func (w wrapped) Driver() driver.Driver                            { return wrappedDriver{w.c.Driver()} }
func (d wrappedDriver) Open(name string) (driver.Conn, error)      { return d.d.Open(name) }

// TestNotTheBaselineThroughAWrappedDriver: a baseline *sql.DB whose
// driver is wrapped still has its identity asked, so a sandbox whose test
// database is the baseline's is refused.
func TestNotTheBaselineThroughAWrappedDriver(t *testing.T) {
	w := mariadbWorld(t)
	e := mytest.Server(t)
	var name string
	if err := w.direct[""].QueryRowContext(context.Background(), "SELECT DATABASE()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	base := sql.OpenDB(sqlroute.Guard(wrapped{e.Connector(t, name)}))
	defer base.Close()
	p, err := sqlroute.StaticMySQL(map[string]string{"same": w.dsn[""], "other": w.dsn["a"]})
	if err != nil {
		t.Fatal(err)
	}
	r, err := sqlroute.New(base, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ins := "INSERT INTO items (owner) VALUES (?)"
	if _, err := r.ExecContext(sandboxCtx("same"), ins, "same"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("the baseline's database as a test database, wrapped driver: %v, want ErrNoTestDatabase", err)
	}
	if _, err := r.ExecContext(sandboxCtx("other"), ins, "other"); err != nil {
		t.Errorf("another database: %v", err)
	}
	if n := w.total(t, ""); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline", n)
	}
}
