package sqlroute_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/mytest"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// nilConnector is a Provider whose Open answers no connector and no error.
type nilConnector struct{}

func (nilConnector) Lookup(id string) (string, error) { return id, nil }
func (nilConnector) Open(context.Context, string, string) (driver.Connector, error) {
	return nil, nil
}

// pgConfigs is a dbroute.Provider whose Open returns cfg, whatever it is.
type pgConfigs struct{ cfg *pgxpool.Config }

func (p pgConfigs) Lookup(id string) (string, error) { return id, nil }
func (p pgConfigs) Open(context.Context, string, string) (*pgxpool.Config, error) {
	return p.cfg, nil
}

// TestProviderMisbehaviourIsARefusalNotACrash: the router opens a
// sandbox's database in a goroutine of its own, so a provider that
// answers no connector (or, through Postgres, no configuration, or one
// not made by pgx.ParseConfig, on which pgx panics) crashed the whole
// service — production included — on a sandbox's first request. Each is
// a refusal of that sandbox (ErrNoTestDatabase, as dbroute's Router
// says for a nil configuration), and the baseline keeps serving.
func TestProviderMisbehaviourIsARefusalNotACrash(t *testing.T) {
	w := postgresWorld(t)
	providers := map[string]sqlroute.Provider{
		"a nil connector":                                nilConnector{},
		"Postgres: a nil configuration":                  sqlroute.Postgres(pgConfigs{}),
		"Postgres: a configuration, no ConnConfig":       sqlroute.Postgres(pgConfigs{&pgxpool.Config{}}),
		"Postgres: a configuration not from ParseConfig": sqlroute.Postgres(pgConfigs{&pgxpool.Config{ConnConfig: &pgx.ConnConfig{}}}),
	}
	for name, p := range providers {
		r, err := sqlroute.New(w.baseline, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.ExecContext(sandboxCtx("a"), "INSERT INTO items (owner) VALUES ($1)", "a"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
			t.Errorf("%s: %v, want ErrNoTestDatabase", name, err)
		}
		if _, err := r.ExecContext(context.Background(), "SELECT 1"); err != nil {
			t.Errorf("%s: the baseline afterwards: %v", name, err)
		}
		r.Close()
	}
	if n := w.total(t, ""); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline", n)
	}
}

// TestNotTheBaselineAfterAProductionUSE: the router learns which database
// the baseline is by asking one of the baseline's pooled connections
// DATABASE(). A production session that ran USE (a tenant per database on
// one pool) and went back to the pool answers another name: a sandbox
// whose test database is the baseline's was then taken for another
// database, and its rows went to production; a sandbox whose test
// database is the one USE'd was refused. The baseline's identity is that
// of a new connection, whatever its pooled sessions did.
func TestNotTheBaselineAfterAProductionUSE(t *testing.T) {
	w := mariadbWorld(t)
	var baseName, aName string
	if err := w.direct[""].QueryRow("SELECT DATABASE()").Scan(&baseName); err != nil {
		t.Fatal(err)
	}
	if err := w.direct["a"].QueryRow("SELECT DATABASE()").Scan(&aName); err != nil {
		t.Fatal(err)
	}
	w.baseline.SetMaxOpenConns(1)
	c, err := w.baseline.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(context.Background(), "USE "+mytest.Quote(aName)); err != nil {
		t.Fatal(err)
	}
	c.Close() // back to the pool, USE'd
	p, err := sqlroute.StaticMySQL(map[string]string{"same": w.dsn[""], "a": w.dsn["a"]})
	if err != nil {
		t.Fatal(err)
	}
	r := (&world{baseline: w.baseline, provider: p}).router(t)
	ins := "INSERT INTO items (owner) VALUES (?)"
	if _, err := r.ExecContext(sandboxCtx("same"), ins, "same"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("the baseline's database as a test database, after a production USE: %v, want ErrNoTestDatabase", err)
	}
	if _, err := r.ExecContext(sandboxCtx("a"), ins, "a"); err != nil {
		t.Errorf("sandbox a, whose database production USE'd: %v", err)
	}
	if n := w.count(t, "", "same"); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline database %s", n, baseName)
	}
}

// TestRouteTableNotLoadedIsUnavailable: before its route table has
// loaded, the router cannot tell a sandbox that exists from one that does
// not. It said ErrNoTestDatabase (permanent: "the sandbox has none"),
// audited as "not in the route table", to every sandbox request of a
// service whose table source was slow or down at start-up; a caller that
// drops permanent failures lost them. It is ErrUnavailable (transient),
// audited with the reason the other routers give, and the baseline is not
// touched; once the table loads, the sandbox is routed.
func TestRouteTableNotLoadedIsUnavailable(t *testing.T) {
	w := mariadbWorld(t)
	rec, logger := audittest.New()
	table := routes.New()
	r := w.router(t, sqlroute.WithRoutes(table), sqlroute.WithLogger(logger))
	ins := "INSERT INTO items (owner) VALUES (?)"
	_, err := r.ExecContext(sandboxCtx("a"), ins, "a")
	if !errors.Is(err, dbroute.ErrUnavailable) || errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("a table that never loaded: %v, want ErrUnavailable (not ErrNoTestDatabase)", err)
	}
	var reasons []any
	for _, rc := range rec.Records() {
		if rc[pub.KeyDecision] == string(pub.Rejected) {
			reasons = append(reasons, rc[pub.KeyReason])
		}
	}
	if len(reasons) != 1 || reasons[0] != pub.ReasonNotSynced {
		t.Errorf("audit reasons %q, want one %q", reasons, pub.ReasonNotSynced)
	}
	if err := table.Update([]routes.Sandbox{{ID: "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ExecContext(sandboxCtx("a"), ins, "a"); err != nil {
		t.Errorf("after the table loaded: %v", err)
	}
	if _, err := r.ExecContext(sandboxCtx("b"), ins, "b"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("a sandbox the loaded table does not know: %v, want ErrNoTestDatabase", err)
	}
	if n := w.total(t, ""); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline", n)
	}
}

// gated is a Provider whose Open waits for release, after telling opening.
type gated struct {
	sqlroute.Provider
	opening, release chan struct{}
}

func (g gated) Open(ctx context.Context, id, key string) (driver.Connector, error) {
	close(g.opening)
	<-g.release
	return g.Provider.Open(ctx, id, key)
}

// TestCloseWhileOpeningIsErrClosed: a request waiting for its sandbox's
// database to open when the router is closed was handed the *sql.DB the
// open then closed: it failed with database/sql's unclassified "sql:
// database is closed", or, when it ran first, wrote after Close had
// returned. It fails with dbroute.ErrClosed.
func TestCloseWhileOpeningIsErrClosed(t *testing.T) {
	w := mariadbWorld(t)
	g := gated{w.provider, make(chan struct{}), make(chan struct{})}
	r, err := sqlroute.New(w.baseline, g)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		_, err := r.ExecContext(sandboxCtx("a"), "INSERT INTO items (owner) VALUES (?)", "a")
		done <- err
	}()
	<-g.opening
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	if err := <-done; !errors.Is(err, dbroute.ErrClosed) {
		t.Errorf("a request waiting for the open across Close: %v, want ErrClosed", err)
	}
	if n := w.total(t, "a"); n != 0 {
		t.Errorf("%d rows written after Close", n)
	}
}

// stuckOnce is a Provider whose first Open ignores its context and hangs
// until release; later ones answer.
type stuckOnce struct {
	sqlroute.Provider
	calls   *atomic.Int32
	release chan struct{}
}

func (p stuckOnce) Open(ctx context.Context, id, key string) (driver.Connector, error) {
	if p.calls.Add(1) == 1 {
		<-p.release
	}
	return p.Provider.Open(ctx, id, key)
}

// TestOpenTimeoutBoundsAProviderThatIgnoresIt: WithOpenTimeout bounds
// provisioning, but only through the context handed to the provider: one
// that ignored it (a hung provisioning lock, a call without a context)
// kept the sandbox's entry opening for good, so every later request of
// the sandbox waited on it until its own deadline, and the entry held one
// of the WithMaxPools slots. After the open timeout the open is given up:
// the waiting request is refused (ErrUnavailable), the next one opens
// afresh, and what the stuck provider returns later is closed.
func TestOpenTimeoutBoundsAProviderThatIgnoresIt(t *testing.T) {
	w := mariadbWorld(t)
	p := stuckOnce{w.provider, new(atomic.Int32), make(chan struct{})}
	defer close(p.release)
	r, err := sqlroute.New(w.baseline, p, sqlroute.WithOpenTimeout(50*time.Millisecond), sqlroute.WithMaxPools(1))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ins := "INSERT INTO items (owner) VALUES (?)"
	if _, err := r.ExecContext(sandboxCtx("a"), ins, "a"); !errors.Is(err, dbroute.ErrUnavailable) {
		t.Errorf("the open the provider hung: %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithTimeout(sandboxCtx("a"), time.Minute)
	defer cancel()
	if _, err := r.ExecContext(ctx, ins, "a"); err != nil {
		t.Errorf("the next request, with the provider answering: %v", err)
	}
	if n := w.total(t, ""); n != 0 {
		t.Errorf("%d sandbox rows reached the baseline", n)
	}
}

// TestNotTheBaselineWhenTheBaselineNamesNoDatabase: a MySQL baseline
// whose connection string names no database (its statements name theirs,
// ledger.orders, or USE one) has no database to compare with: its
// identity is the server alone, which no test database's (server and
// database) equalled, so a sandbox whose test database is production's
// ledger on that server passed and wrote into it. On the baseline's
// server, a test database cannot be told apart from production's then:
// it is refused; the baseline is not touched.
func TestNotTheBaselineWhenTheBaselineNamesNoDatabase(t *testing.T) {
	w := mariadbWorld(t)
	e := mytest.Server(t)
	base := sql.OpenDB(sqlroute.Guard(e.Connector(t, "")))
	defer base.Close()
	p, err := sqlroute.StaticMySQL(map[string]string{"same": w.dsn[""]})
	if err != nil {
		t.Fatal(err)
	}
	r, err := sqlroute.New(base, p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ExecContext(sandboxCtx("same"), "INSERT INTO items (owner) VALUES (?)", "same"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("production's database on the server of a baseline naming none: %v, want ErrNoTestDatabase", err)
	}
	if n := w.total(t, ""); n != 0 {
		t.Errorf("%d sandbox rows reached production's database", n)
	}
}

// TestCloseWithACallInFlightIsErrClosed: a sandbox call running on its
// *sql.DB (here waiting for one of its connections) when the router is
// closed got database/sql's unclassified "sql: database is closed". It
// fails with dbroute.ErrClosed, as calls after Close do.
func TestCloseWithACallInFlightIsErrClosed(t *testing.T) {
	w := mariadbWorld(t)
	var sdb atomic.Pointer[sql.DB]
	r, err := sqlroute.New(w.baseline, w.provider, sqlroute.WithDBConfig(func(_ string, db *sql.DB) {
		db.SetMaxOpenConns(1)
		sdb.Store(db)
	}))
	if err != nil {
		t.Fatal(err)
	}
	a := sandboxCtx("a")
	c, err := r.Conn(a) // the only connection
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error)
	go func() {
		_, err := r.ExecContext(a, "INSERT INTO items (owner) VALUES (?)", "a")
		done <- err
	}()
	for sdb.Load().Stats().WaitCount == 0 {
		runtime.Gosched()
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, dbroute.ErrClosed) {
		t.Errorf("a call in flight across Close: %v, want ErrClosed", err)
	}
}
