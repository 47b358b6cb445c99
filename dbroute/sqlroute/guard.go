package sqlroute

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Guard wraps the connector of a baseline database so that the *sql.DB
// opened on it (sql.OpenDB(sqlroute.Guard(c))) refuses sandbox contexts
// on every statement, however the connection, transaction or statement
// was obtained: database/sql hands each call's context to the driver, and
// the guard checks it before the driver sends anything —
//
//   - opening a connection (driver.Connector's Connect);
//   - ExecContext and QueryContext of the DB, a Conn or a Tx
//     (driver.ExecerContext, driver.QueryerContext; a driver without them
//     makes database/sql prepare, which is guarded too);
//   - PrepareContext (driver.ConnPrepareContext), and ExecContext and
//     QueryContext of a prepared statement ([driver.StmtExecContext],
//     [driver.StmtQueryContext]), even one prepared with a baseline
//     context, and Tx.StmtContext;
//   - BeginTx (driver.ConnBeginTx) and PingContext (driver.Pinger).
//
// A connection or transaction obtained with a baseline context and then
// used with a sandbox context is refused on that statement; the
// connection stays usable. The errors wrap [dbroute.ErrSandboxOnBaseline].
//
// What it cannot catch: Rows of a query run with a baseline context and
// read under a sandbox context (no statement is sent); Tx.Commit and
// Rollback, which take no context (a transaction whose every sandbox
// statement was refused has nothing of the sandbox to commit); a context
// that lost the sandbox (context.Background() in a goroutine); and what
// a caller does with the driver's own connection through sql.Conn.Raw
// (which hands over the guard's connection: call its Unwrap method to
// reach the driver's, outside the guard).
//
// With [WithLogger] among opts, each refusal is one audit record
// (rejected, protocol "sql"). A nil c returns nil.
func Guard(c driver.Connector, opts ...GuardOption) driver.Connector {
	if c == nil {
		return nil
	}
	cfg := newGuardConfig(opts)
	return &guardConnector{c: c, logger: cfg.logger}
}

type guardConnector struct {
	c      driver.Connector
	logger *slog.Logger
	// own, when set, makes this the guard of sandbox own's test database
	// ([ownGuard]): it refuses every context that does not carry that
	// sandbox instead of every context that carries one.
	own string
	// verify checks each new connection of own's test database.
	verify func(context.Context, driver.Conn) error
}

// ownGuard wraps the connector of sandbox id's test database: a Conn, Tx
// or Stmt the router hands out for the sandbox refuses a statement whose
// context is production's or another sandbox's, which would otherwise land
// in this test database. Connect's context is not checked (database/sql
// also opens connections from its own goroutine, without the caller's
// context); each new connection is handed to verify (that it did not
// reach the baseline database) before database/sql uses it.
func ownGuard(c driver.Connector, id string, logger *slog.Logger, verify func(context.Context, driver.Conn) error) driver.Connector {
	return &guardConnector{c: c, logger: logger, own: id, verify: verify}
}

// probeID is the sandbox ID of [New]'s check that its baseline is
// guarded: not a valid sandbox ID, so no request can carry it.
const probeID = "sqlroute: guard probe"

// probeKey carries New's *probeSlot, where the guard answering the probe
// leaves the connector it wraps.
type probeKey struct{}

type probeSlot struct{ c driver.Connector }

// errProbe is the guard's answer to New's probe: nothing sent, nothing
// audited.
var errProbe = errors.New("sqlroute: guarded")

// check refuses a sandbox context.
func (g *guardConnector) check(ctx context.Context) error {
	s, ok := propagation.FromContext(ctx)
	if g.own != "" {
		// The sandbox's own context passes, and so does no context at
		// all: what database/sql hands the driver for the methods
		// without one (Tx.Exec, Stmt.Exec, Tx.Prepare...), run by the
		// holder of the sandbox's handle.
		if ok && s.ID == g.own || !ok && (ctx == context.Background() || ctx == context.TODO()) {
			return nil
		}
		return g.foreign(ctx, s, ok)
	}
	if !ok {
		return nil
	}
	if s.ID == probeID {
		if slot, ok := ctx.Value(probeKey{}).(*probeSlot); ok {
			slot.c = g.c
		}
		return errProbe
	}
	return g.refuse(ctx, s, fmt.Errorf("%w: sandbox %q (the baseline *sql.DB only serves production traffic)", dbroute.ErrSandboxOnBaseline, s.ID))
}

// refuse audits err, the refusal of a statement of sandbox s, and returns
// it.
func (g *guardConnector) refuse(ctx context.Context, s propagation.Sandbox, err error) error {
	audit.Emit(ctx, g.logger, audit.Event{
		Decision: audit.Rejected,
		Sandbox:  s,
		Protocol: audit.SQL,
		Reason:   err.Error(),
	})
	return err
}

// foreign refuses a statement on sandbox g.own's test database whose
// context carries another sandbox (s, ok) or none.
func (g *guardConnector) foreign(ctx context.Context, s propagation.Sandbox, ok bool) error {
	whose := "a production context"
	if ok {
		whose = fmt.Sprintf("the context of sandbox %q", s.ID)
	} else {
		s = propagation.Sandbox{ID: g.own}
	}
	return g.refuse(ctx, s, fmt.Errorf("%w: %s on the test database of sandbox %q (a Conn, Tx or Stmt the router handed out serves only the sandbox it was obtained for)", ErrForeignContext, whose, g.own))
}

func (g *guardConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if g.own == "" {
		if err := g.check(ctx); err != nil {
			return nil, err
		}
	}
	c, err := g.c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	if g.verify != nil {
		if err := g.verify(ctx, c); err != nil {
			c.Close()
			return nil, err
		}
	}
	return &guardConn{c: c, g: g}, nil
}

func (g *guardConnector) Driver() driver.Driver { return g.c.Driver() }

// Close closes the wrapped connector if it has a Close method (sql.DB's
// Close calls it).
func (g *guardConnector) Close() error {
	if c, ok := g.c.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// guardConn is a baseline connection whose every context-taking method
// checks the context first.
type guardConn struct {
	c driver.Conn
	g *guardConnector

	// stmt is the wrapper of the connection's prepared statement while
	// stmtBusy, so that the statement database/sql prepares, runs and
	// closes for each statement with arguments on drivers without
	// ExecerContext for them (go-sql-driver/mysql) costs no allocation.
	// database/sql serializes a connection's driver calls, and a second
	// statement prepared while the first is open gets its own wrapper.
	stmt     guardStmt
	stmtBusy bool
}

var (
	_ driver.ConnPrepareContext = (*guardConn)(nil)
	_ driver.ConnBeginTx        = (*guardConn)(nil)
	_ driver.ExecerContext      = (*guardConn)(nil)
	_ driver.QueryerContext     = (*guardConn)(nil)
	_ driver.Pinger             = (*guardConn)(nil)
	_ driver.SessionResetter    = (*guardConn)(nil)
	_ driver.Validator          = (*guardConn)(nil)
	_ driver.NamedValueChecker  = (*guardConn)(nil)
)

// Unwrap returns the driver's connection, outside the guard.
func (c *guardConn) Unwrap() driver.Conn { return c.c }

func (c *guardConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *guardConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if err := c.g.check(ctx); err != nil {
		return nil, err
	}
	var s driver.Stmt
	var err error
	if pc, ok := c.c.(driver.ConnPrepareContext); ok {
		s, err = pc.PrepareContext(ctx, query)
	} else {
		s, err = c.c.Prepare(query)
	}
	if err != nil {
		return nil, err
	}
	if !c.stmtBusy {
		c.stmtBusy = true
		c.stmt = guardStmt{s: s, c: c, cached: true}
		return &c.stmt, nil
	}
	return &guardStmt{s: s, c: c}, nil
}

func (c *guardConn) Close() error { return c.c.Close() }

// Begin is the deprecated driver method; database/sql calls BeginTx.
func (c *guardConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *guardConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.g.check(ctx); err != nil {
		return nil, err
	}
	if bc, ok := c.c.(driver.ConnBeginTx); ok {
		return bc.BeginTx(ctx, opts)
	}
	if opts.Isolation != driver.IsolationLevel(0) || opts.ReadOnly {
		return nil, fmt.Errorf("sqlroute: the driver supports neither isolation levels nor read-only transactions")
	}
	//lint:ignore SA1019 the fallback database/sql itself uses for drivers without BeginTx
	return c.c.Begin() //nolint:staticcheck
}

func (c *guardConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := c.g.check(ctx); err != nil {
		return nil, err
	}
	if ec, ok := c.c.(driver.ExecerContext); ok {
		return ec.ExecContext(ctx, query, args)
	}
	return nil, driver.ErrSkip // database/sql prepares: guarded
}

func (c *guardConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if err := c.g.check(ctx); err != nil {
		return nil, err
	}
	if qc, ok := c.c.(driver.QueryerContext); ok {
		return qc.QueryContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (c *guardConn) Ping(ctx context.Context) error {
	if err := c.g.check(ctx); err != nil {
		return err
	}
	if p, ok := c.c.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *guardConn) ResetSession(ctx context.Context) error {
	if r, ok := c.c.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *guardConn) IsValid() bool {
	if v, ok := c.c.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *guardConn) CheckNamedValue(nv *driver.NamedValue) error {
	if n, ok := c.c.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(nv)
	}
	return driver.ErrSkip // database/sql's default conversion
}

// guardStmt is a prepared statement of a baseline connection: each
// execution checks its context.
type guardStmt struct {
	s      driver.Stmt
	c      *guardConn // the connection it was prepared on
	cached bool       // the wrapper is c.stmt
}

var (
	_ driver.StmtExecContext   = (*guardStmt)(nil)
	_ driver.StmtQueryContext  = (*guardStmt)(nil)
	_ driver.NamedValueChecker = (*guardStmt)(nil)
)

func (s *guardStmt) Close() error {
	err := s.s.Close()
	if s.cached {
		c := s.c
		c.stmt = guardStmt{}
		c.stmtBusy = false
	}
	return err
}

func (s *guardStmt) NumInput() int { return s.s.NumInput() }

// Exec is the deprecated driver method; database/sql calls ExecContext.
func (s *guardStmt) Exec(args []driver.Value) (driver.Result, error) {
	//lint:ignore SA1019 kept for callers of the deprecated interface; database/sql does not use it
	return s.s.Exec(args) //nolint:staticcheck
}

// Query is the deprecated driver method; database/sql calls QueryContext.
func (s *guardStmt) Query(args []driver.Value) (driver.Rows, error) {
	//lint:ignore SA1019 kept for callers of the deprecated interface; database/sql does not use it
	return s.s.Query(args) //nolint:staticcheck
}

func (s *guardStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if err := s.c.g.check(ctx); err != nil {
		return nil, err
	}
	if ec, ok := s.s.(driver.StmtExecContext); ok {
		return ec.ExecContext(ctx, args)
	}
	vs, err := values(args)
	if err != nil {
		return nil, err
	}
	return s.Exec(vs)
}

func (s *guardStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if err := s.c.g.check(ctx); err != nil {
		return nil, err
	}
	if qc, ok := s.s.(driver.StmtQueryContext); ok {
		return qc.QueryContext(ctx, args)
	}
	vs, err := values(args)
	if err != nil {
		return nil, err
	}
	return s.Query(vs)
}

// CheckNamedValue converts an argument as database/sql would without the
// guard: with the statement's checker, else the connection's (pgx's
// stdlib has only the latter, which takes every Go value), else the
// default conversion.
func (s *guardStmt) CheckNamedValue(nv *driver.NamedValue) error {
	if n, ok := s.s.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(nv)
	}
	if n, ok := s.c.c.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// values converts named arguments for a driver without the context
// methods, as database/sql does: names are not supported.
func values(named []driver.NamedValue) ([]driver.Value, error) {
	out := make([]driver.Value, len(named))
	for i, nv := range named {
		if nv.Name != "" {
			return nil, fmt.Errorf("sqlroute: the driver does not support named parameters")
		}
		out[i] = nv.Value
	}
	return out, nil
}
