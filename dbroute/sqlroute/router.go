package sqlroute

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"
	"time"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Router has the query methods of *sql.DB and sends each call to the
// baseline *sql.DB, or, when its context carries a sandbox
// ([propagation.FromContext]), to that sandbox's test database — or fails
// with an error of one of dbroute's classes. A sandbox call never reaches
// the baseline. Build it with [New]; it is safe for concurrent use.
type Router struct {
	base *sql.DB
	p    Provider
	cfg  config
	// errDB turns an error into a *sql.Row (QueryRowContext): its
	// connector fails every Connect with the error in the context.
	errDB *sql.DB

	mu      sync.Mutex
	dbs     map[string]*entry
	closed  bool
	baseIDs map[string]string // the baseline's stable identities, by query
	// baseC is the baseline's connector inside its guard: its identity is
	// asked on a new connection, which no session state (a USE) has moved.
	baseC driver.Connector
}

// entry is a sandbox's *sql.DB, or its opening in progress.
type entry struct {
	key   string
	ready chan struct{} // closed when db or err is set
	db    *sql.DB
	err   error
	// guarded by Router.mu:
	calls    int // router calls running on db
	lastUsed time.Time
	gone     bool // closed or replaced: the next request opens another
}

// New returns a router over baseline that finds sandboxes' test databases
// with p. The baseline must be protected with [Guard]
// (sql.OpenDB(sqlroute.Guard(c))) so that a sandbox context can reach it
// by no path, not even through a Tx or Conn obtained for production and
// used with a sandbox's context later; New checks it without sending
// anything. The errors wrap [dbroute.ErrConfig]: a nil baseline or
// provider, a baseline without the guard, an invalid option.
func New(baseline *sql.DB, p Provider, opts ...RouterOption) (*Router, error) {
	cfg, err := newRouterConfig(opts)
	switch {
	case err != nil:
		return nil, err
	case baseline == nil:
		return nil, fmt.Errorf("sqlroute: New: %w: nil baseline *sql.DB", dbroute.ErrConfig)
	case p == nil:
		return nil, fmt.Errorf("sqlroute: New: %w: nil provider", dbroute.ErrConfig)
	}
	// A Tx or Conn handed out for production may later be used with a
	// sandbox context: only the guard refuses that statement. The guard
	// answers this probe without sending or auditing anything.
	// It also hands over its connector: the baseline's identity is asked
	// on a new connection of its own (baselineIdentity).
	var guard probeSlot
	probe := context.WithValue(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: probeID}), probeKey{}, &guard)
	if err := baseline.PingContext(probe); !errors.Is(err, errProbe) || guard.c == nil {
		return nil, fmt.Errorf("sqlroute: New: %w: the baseline *sql.DB is not guarded: open it with sql.OpenDB(sqlroute.Guard(connector)) (the probe got %v)", dbroute.ErrConfig, err)
	}
	r := &Router{
		base:    baseline,
		baseC:   guard.c,
		p:       p,
		cfg:     cfg,
		errDB:   sql.OpenDB(errConnector{}),
		dbs:     make(map[string]*entry),
		baseIDs: make(map[string]string),
	}
	if rc, ok := p.(reclaimer); ok {
		rc.OnRemove(r.forget)
	}
	return r, nil
}

// Baseline returns the baseline *sql.DB.
func (r *Router) Baseline() *sql.DB { return r.base }

// ExecContext runs query on the baseline or on the sandbox's test database.
func (r *Router) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.base.ExecContext(ctx, query, args...)
	}
	db, done, err := r.acquire(ctx, s)
	if err != nil {
		return nil, err
	}
	defer done()
	res, err := db.ExecContext(ctx, query, args...)
	return res, r.later(s.ID, err)
}

// QueryContext runs query on the baseline or on the sandbox's test
// database.
func (r *Router) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.base.QueryContext(ctx, query, args...)
	}
	db, done, err := r.acquire(ctx, s)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.QueryContext(ctx, query, args...)
	return rows, r.later(s.ID, err)
}

// QueryRowContext runs query on the baseline or on the sandbox's test
// database. A refused sandbox request returns a Row whose Scan and Err
// report the refusal — except after [Router.Close], when they report
// database/sql's "sql: database is closed" (the Row is built by a
// *sql.DB of the router's, closed with it).
func (r *Router) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.base.QueryRowContext(ctx, query, args...)
	}
	db, done, err := r.acquire(ctx, s)
	if err != nil {
		return r.errRow(ctx, err)
	}
	defer done()
	// The row holds its connection until Scan: the *sql.DB counts it in
	// use, so it is not evicted meanwhile.
	row := db.QueryRowContext(ctx, query, args...)
	if err := row.Err(); err != nil {
		if c := r.later(s.ID, err); c != err {
			return r.errRow(ctx, c)
		}
	}
	return row
}

// BeginTx starts a transaction on the baseline or on the sandbox's test
// database. The transaction stays where it began: run it with the same
// sandbox (a baseline transaction protected by [Guard] refuses statements
// with a sandbox context; a sandbox's transaction refuses statements
// whose context is production's or another sandbox's with
// [ErrForeignContext]).
func (r *Router) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.base.BeginTx(ctx, opts)
	}
	db, done, err := r.acquire(ctx, s)
	if err != nil {
		return nil, err
	}
	defer done()
	tx, err := db.BeginTx(ctx, opts)
	return tx, r.later(s.ID, err)
}

// Conn returns a connection of the baseline or of the sandbox's test
// database. As for BeginTx, use it with the context it was obtained with:
// a sandbox's Conn, and the statements prepared on it, refuse any other
// context with [ErrForeignContext].
func (r *Router) Conn(ctx context.Context) (*sql.Conn, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.base.Conn(ctx)
	}
	db, done, err := r.acquire(ctx, s)
	if err != nil {
		return nil, err
	}
	defer done()
	c, err := db.Conn(ctx)
	return c, r.later(s.ID, err)
}

// PingContext pings the baseline, or the sandbox's test database
// (provisioning it if its provider does).
func (r *Router) PingContext(ctx context.Context) error {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.base.PingContext(ctx)
	}
	db, done, err := r.acquire(ctx, s)
	if err != nil {
		return err
	}
	defer done()
	return r.later(s.ID, db.PingContext(ctx))
}

// Close closes every sandbox *sql.DB the router opened (not the baseline)
// and makes later sandbox requests fail with [dbroute.ErrClosed], and so
// do those waiting for a sandbox's database to open and those still
// waiting for one of its connections. A statement already running on a
// connection finishes there, and a Conn or Tx already handed out keeps
// its connection until it is closed.
func (r *Router) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var dbs []*sql.DB
	for id, e := range r.dbs {
		if d := r.dropLocked(id, e); d != nil {
			dbs = append(dbs, d)
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, db := range dbs {
		errs = append(errs, db.Close())
	}
	errs = append(errs, r.errDB.Close())
	return errors.Join(errs...)
}

// later classifies err, the failure of a call on a sandbox's *sql.DB
// ([later]); database/sql's "sql: database is closed", which a call still
// running gets when its *sql.DB is closed under it, is [dbroute.ErrClosed]
// after Close, and [dbroute.ErrUnavailable] when the database was removed
// (the next request opens another).
func (r *Router) later(id string, err error) error {
	if err != nil && err.Error() == dbClosed {
		r.mu.Lock()
		closed := r.closed
		r.mu.Unlock()
		if closed {
			return fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrClosed, id, err)
		}
		return fmt.Errorf("%w: sandbox %q: its test database was closed under the call (removed or replaced): %w", dbroute.ErrUnavailable, id, err)
	}
	return later(id, err)
}

// dbClosed is the text of database/sql's unexported error for a call on a
// closed *sql.DB.
const dbClosed = "sql: database is closed"

// acquire returns sandbox s's *sql.DB, counted in use until done is
// called.
func (r *Router) acquire(ctx context.Context, s propagation.Sandbox) (db *sql.DB, done func(), err error) {
	defer func() {
		if err != nil {
			r.refused(ctx, s, err)
		}
	}()
	if t := r.cfg.table; t != nil {
		if _, ok := t.Sandbox(s.ID); !ok {
			if t.SyncedAt().IsZero() {
				// A table that never loaded cannot say whether the
				// sandbox exists: transient, as for the other routers.
				return nil, nil, fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrUnavailable, s.ID, errNotSynced)
			}
			return nil, nil, fmt.Errorf("%w: sandbox %q is not in the route table", dbroute.ErrNoTestDatabase, s.ID)
		}
	}
	key, err := r.p.Lookup(s.ID)
	if err != nil {
		return nil, nil, classify(s.ID, err)
	}
	e, err := r.entry(ctx, s, key)
	if err != nil {
		return nil, nil, err
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		r.release(e)
		return nil, nil, classify(s.ID, ctx.Err())
	}
	if e.err != nil {
		r.release(e)
		return nil, nil, e.err
	}
	return e.db, func() { r.release(e) }, nil
}

// entry returns sandbox s's entry for key, counted in use, starting its
// opening if there is none. It waits (polling) while every slot is in use.
func (r *Router) entry(ctx context.Context, s propagation.Sandbox, key string) (*entry, error) {
	id := s.ID
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: sandbox %q", dbroute.ErrClosed, id)
		}
		var toClose []*sql.DB
		e := r.dbs[id]
		if e != nil && e.key != key {
			// The provider's answer changed: the next request opens the
			// new database.
			if d := r.dropLocked(id, e); d != nil {
				toClose = append(toClose, d)
			}
			e = nil
		}
		if e == nil {
			toClose = append(toClose, r.sweepLocked()...)
			if len(r.dbs) >= r.cfg.maxPools {
				if d := r.evictLocked(); d != nil {
					toClose = append(toClose, d)
				}
			}
			if len(r.dbs) < r.cfg.maxPools {
				e = &entry{key: key, ready: make(chan struct{})}
				r.dbs[id] = e
				go r.open(s, e)
			}
		}
		if e != nil {
			e.calls++
			e.lastUsed = r.cfg.now()
		}
		r.mu.Unlock()
		for _, d := range toClose {
			d.Close()
		}
		if e != nil {
			return e, nil
		}
		t := time.NewTimer(poolWait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %w: sandbox %q waited for one of %d test database slots (WithMaxPools): %w",
				dbroute.ErrUnavailable, dbroute.ErrPoolLimit, id, r.cfg.maxPools, ctx.Err())
		}
	}
}

// open provisions and opens sandbox s's *sql.DB, bounded by the open
// timeout and not by any one caller's context (every waiter shares it).
// s is the sandbox of the request that asked first, for the audit record.
func (r *Router) open(s propagation.Sandbox, e *entry) {
	id := s.ID
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.openTimeout)
	defer cancel()
	c, db, err := r.openBounded(ctx, id, e.key)
	if err != nil {
		e.err = classify(id, err)
	} else {
		e.db = db
	}
	if e.db != nil && r.cfg.logger != nil {
		audit.Emit(ctx, r.cfg.logger, audit.Event{
			Decision: audit.Routed,
			Sandbox:  s,
			Protocol: audit.SQL,
			Target:   describe(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id}), e.db, c.Driver()),
			Reason:   "opened the test database",
		})
	}
	r.mu.Lock()
	if e.err != nil && r.dbs[id] == e {
		// Failures are not kept: the next request tries again.
		delete(r.dbs, id)
		e.gone = true
	}
	var closeNow *sql.DB
	if e.db != nil && (e.gone || r.closed) {
		// Removed (forget, Close, the provider's answer changed) while it
		// opened: the requests waiting for it are refused, not handed a
		// closed *sql.DB; the next request opens another.
		closeNow, e.db = e.db, nil
		if r.closed {
			e.err = fmt.Errorf("%w: sandbox %q", dbroute.ErrClosed, id)
		} else {
			e.err = fmt.Errorf("%w: sandbox %q: its test database was removed while it opened", dbroute.ErrUnavailable, id)
		}
	}
	close(e.ready)
	r.mu.Unlock()
	if closeNow != nil {
		closeNow.Close()
	}
}

// openBounded is openDB, given up when ctx ends even if the provider
// or the driver ignores ctx (a hung provisioning lock): the sandbox's
// waiting requests are refused then, and the next one opens afresh; a
// *sql.DB opened after all is closed.
func (r *Router) openBounded(ctx context.Context, id, key string) (driver.Connector, *sql.DB, error) {
	type result struct {
		c   driver.Connector
		db  *sql.DB
		err error
	}
	ch := make(chan result) // unbuffered: a result nobody takes is closed below
	go func() {
		c, db, err := r.openDB(ctx, id, key)
		select {
		case ch <- result{c, db, err}:
		case <-ctx.Done():
			if db != nil {
				db.Close()
			}
		}
	}()
	select {
	case res := <-ch:
		return res.c, res.db, res.err
	case <-ctx.Done():
		select {
		case res := <-ch: // it answered as ctx ended
			return res.c, res.db, res.err
		default:
		}
		return nil, nil, fmt.Errorf("%w: sandbox %q: opening its test database took longer than the open timeout (WithOpenTimeout): %w", dbroute.ErrUnavailable, id, ctx.Err())
	}
}

// openDB provisions sandbox id's test database and opens its *sql.DB
// with one connection, checked as every new one is: a test database that
// is the baseline's fails. It runs in a goroutine of the router's, so a
// provider that answers no connector, or a driver that panics on what the
// provider gave (pgx on a configuration not made by ParseConfig), is this
// sandbox's refusal, not a crash of the service.
func (r *Router) openDB(ctx context.Context, id, key string) (c driver.Connector, db *sql.DB, err error) {
	defer func() {
		if v := recover(); v != nil {
			if db != nil {
				db.Close()
			}
			c, db, err = nil, nil, fmt.Errorf("%w: sandbox %q: opening its test database panicked: %v", dbroute.ErrNoTestDatabase, id, v)
		}
	}()
	c, err = r.p.Open(ctx, id, key)
	if err != nil {
		return nil, nil, err
	}
	if c == nil {
		return nil, nil, fmt.Errorf("%w: sandbox %q: the provider returned no connector", dbroute.ErrNoTestDatabase, id)
	}
	db = sql.OpenDB(ownGuard(c, id, r.cfg.logger, r.connChecker(id, c.Driver())))
	db.SetMaxOpenConns(DefaultMaxOpenConns)
	db.SetConnMaxIdleTime(r.cfg.idleTimeout)
	if f := r.cfg.dbConfig; f != nil {
		f(id, db)
	}
	if err := db.PingContext(context.WithValue(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id}), openingKey{}, true)); err != nil {
		db.Close()
		return nil, nil, err
	}
	return c, db, nil
}

func (r *Router) release(e *entry) {
	r.mu.Lock()
	e.calls--
	e.lastUsed = r.cfg.now()
	r.mu.Unlock()
}

// inUseLocked reports whether e is opening, or in use: a call of the
// router on it, or a connection checked out (rows, a transaction, a Conn).
func inUseLocked(e *entry) bool {
	select {
	case <-e.ready:
	default:
		return true
	}
	return e.calls > 0 || (e.db != nil && e.db.Stats().InUse > 0)
}

// dropLocked removes e, sandbox id's entry, and returns its *sql.DB to
// close (nil while it is opening: open closes it).
func (r *Router) dropLocked(id string, e *entry) *sql.DB {
	if r.dbs[id] == e {
		delete(r.dbs, id)
	}
	e.gone = true
	select {
	case <-e.ready:
		return e.db
	default:
		return nil
	}
}

// sweepLocked removes the entries idle for longer than the idle timeout.
func (r *Router) sweepLocked() []*sql.DB {
	if r.cfg.idleTimeout <= 0 {
		return nil
	}
	var out []*sql.DB
	now := r.cfg.now()
	for id, e := range r.dbs {
		if !inUseLocked(e) && now.Sub(e.lastUsed) > r.cfg.idleTimeout {
			if d := r.dropLocked(id, e); d != nil {
				out = append(out, d)
			}
		}
	}
	return out
}

// evictLocked removes the least recently used entry not in use.
func (r *Router) evictLocked() *sql.DB {
	var victim *entry
	var vid string
	for id, e := range r.dbs {
		if inUseLocked(e) {
			continue
		}
		if victim == nil || e.lastUsed.Before(victim.lastUsed) {
			victim, vid = e, id
		}
	}
	if victim == nil {
		return nil
	}
	return r.dropLocked(vid, victim)
}

// forget closes sandbox id's *sql.DB: its provider is about to remove the
// test database.
func (r *Router) forget(id string) {
	r.mu.Lock()
	var db *sql.DB
	if e := r.dbs[id]; e != nil {
		db = r.dropLocked(id, e)
	}
	r.mu.Unlock()
	if db != nil {
		db.Close()
	}
}

// refused emits the audit record of a refused sandbox request.
func (r *Router) refused(ctx context.Context, s propagation.Sandbox, err error) {
	reason := err.Error()
	if errors.Is(err, errNotSynced) {
		reason = pub.ReasonNotSynced
	}
	audit.Emit(ctx, r.cfg.logger, audit.Event{
		Decision: audit.Rejected,
		Sandbox:  s,
		Protocol: audit.SQL,
		Reason:   reason,
	})
}

// errNotSynced is the refusal of a sandbox request before the route table
// has loaded (wrapped in dbroute.ErrUnavailable).
var errNotSynced = errors.New(pub.ReasonNotSynced)

// errRow returns a *sql.Row whose Scan reports err.
func (r *Router) errRow(ctx context.Context, err error) *sql.Row {
	return r.errDB.QueryRowContext(context.WithValue(ctx, errKey{}, err), "")
}

type errKey struct{}

// errConnector fails every Connect with the error in its context.
type errConnector struct{}

func (errConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if err, ok := ctx.Value(errKey{}).(error); ok {
		return nil, err
	}
	return nil, errors.New("sqlroute: internal: no error to report")
}

func (errConnector) Driver() driver.Driver { return errDriver{} }

type errDriver struct{}

func (errDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("sqlroute: internal: not a driver")
}
