package sqlroute_test

import (
	"database/sql"
	"errors"
	"testing"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
)

// TestNewRefusesAnUnguardedBaseline: a Tx or Conn the router hands out
// for production can be used with a sandbox context afterwards; only the
// guard stops that statement, so New refuses a baseline without it. The
// check sends nothing to the server and writes no audit record.
func TestNewRefusesAnUnguardedBaseline(t *testing.T) {
	w := mariadbWorld(t)
	e := mytest.Server(t)
	p, err := sqlroute.StaticMySQL(map[string]string{"a": w.dsn["a"]})
	if err != nil {
		t.Fatal(err)
	}
	var name string
	if err := w.direct[""].QueryRow("SELECT DATABASE()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	bare := sql.OpenDB(e.Connector(t, name))
	defer bare.Close()
	if _, err := sqlroute.New(bare, p); !errors.Is(err, dbroute.ErrConfig) {
		t.Errorf("New over an unguarded baseline: %v, want ErrConfig", err)
	}
	rec, logger := audittest.New()
	guarded := sql.OpenDB(sqlroute.Guard(e.Connector(t, name), sqlroute.WithLogger(logger)))
	defer guarded.Close()
	r, err := sqlroute.New(guarded, p)
	if err != nil {
		t.Fatalf("New over a guarded baseline: %v", err)
	}
	defer r.Close()
	if n := len(rec.Records()); n != 0 {
		t.Errorf("the guard check wrote %d audit records", n)
	}
	if s := guarded.Stats(); s.OpenConnections != 0 {
		t.Errorf("the guard check opened %d connections", s.OpenConnections)
	}
}
