package dbroute

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Errors. Callers branch on them with [errors.Is]; the returned errors wrap
// them with details.
var (
	// ErrNoTestDatabase reports a sandbox request for which no test
	// database can be used. The request is refused: it never falls back to
	// the baseline.
	ErrNoTestDatabase = errors.New("dbroute: no test database for the sandbox")
	// ErrSandboxOnBaseline reports a sandbox context used on a baseline
	// pool protected by [Guard].
	ErrSandboxOnBaseline = errors.New("dbroute: sandbox context on the baseline pool")
	// ErrNotOwned reports a database or schema that has a name the library
	// would use but was not created by it (its marker comment is missing
	// or belongs to another name). The library never uses or drops it.
	ErrNotOwned = errors.New("dbroute: database object not created by dbroute")
	// ErrClosed reports a sandbox request on a closed [Router].
	ErrClosed = errors.New("dbroute: router closed")
)

// Router sends each query to the baseline pool or to the test database of
// the sandbox in its context. It has the query methods of
// [*pgxpool.Pool], so it drops in where the pool was.
type Router struct {
	baseline *pgxpool.Pool
	provider Provider
	cfg      config
	base     *pgconn.Config // the baseline's connection settings

	mu     sync.RWMutex
	pools  map[string]*entry
	closed bool

	flights singleflight.Group
	pending sync.WaitGroup  // pools being opened, and pools removed but not yet closed
	done    context.Context // cancelled by Close: stops opens in flight
	cancel  context.CancelFunc
	stop    chan struct{}
	janitor sync.WaitGroup
}

// entry is one open sandbox pool.
type entry struct {
	id, key string
	target  string
	pool    *pgxpool.Pool
	used    atomic.Int64 // clock, in Unix nanoseconds
	refs    atomic.Int64 // calls running on pool
	retired atomic.Bool  // removed from the router: close when refs drops to 0
	once    sync.Once
}

// New returns a router that sends queries without a sandbox in their
// context to baseline, and queries with one to the sandbox's test database
// from provider. The router owns provider: [Router.Close] closes it when it
// has a Close method. It does not own baseline.
//
// Protect baseline itself with [Guard] so that code which bypasses the
// router cannot reach production data from a sandbox request either.
func New(baseline *pgxpool.Pool, provider Provider, opts ...Option) (*Router, error) {
	if baseline == nil {
		return nil, errors.New("dbroute: New: nil baseline pool")
	}
	if provider == nil {
		return nil, errors.New("dbroute: New: nil provider")
	}
	cfg := newConfig(opts)
	if err := cfg.validateRouter(); err != nil {
		return nil, err
	}
	r := &Router{
		baseline: baseline,
		provider: provider,
		cfg:      cfg,
		base:     baseline.Config().ConnConfig.Config.Copy(),
		pools:    make(map[string]*entry),
		stop:     make(chan struct{}),
	}
	r.done, r.cancel = context.WithCancel(context.Background())
	if cfg.idleTimeout > 0 {
		every := min(max(cfg.idleTimeout/2, time.Second), time.Minute)
		r.janitor.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-r.stop:
					return
				case <-t.C:
					r.CloseIdle()
				}
			}
		})
	}
	return r, nil
}

// Baseline returns the baseline pool.
func (r *Router) Baseline() *pgxpool.Pool { return r.baseline }

// Pool returns the pool ctx resolves to: the baseline pool when ctx carries
// no sandbox (without allocating), else the sandbox's test database pool,
// opened (and the database provisioned) on first use. It never returns the
// baseline pool for a sandbox context; the error wraps [ErrNoTestDatabase]
// when the sandbox has no usable test database.
//
// A sandbox pool stays valid until the router closes it (least recently
// used, idle, [Router.Destroy], [Router.Close]); use it for the request at
// hand and resolve again for the next. The router's own query methods hold
// the pool open while they acquire a connection.
func (r *Router) Pool(ctx context.Context) (*pgxpool.Pool, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline, nil
	}
	e, err := r.sandbox(ctx, s, false)
	if err != nil {
		return nil, err
	}
	return e.pool, nil
}

// sandbox returns the open pool of s, opening it if needed. With hold, the
// caller must call r.release(e) when done.
func (r *Router) sandbox(ctx context.Context, s propagation.Sandbox, hold bool) (*entry, error) {
	if t := r.cfg.table; t != nil {
		if _, ok := t.Sandbox(s.ID); !ok {
			return nil, r.refuse(ctx, s, fmt.Errorf("%w: sandbox %q is not in the route table", ErrNoTestDatabase, s.ID))
		}
	}
	key, err := r.provider.Lookup(s.ID)
	if err != nil {
		return nil, r.refuse(ctx, s, noTestDatabase(s.ID, err))
	}
	for attempt := 0; ; attempt++ {
		r.mu.RLock()
		if r.closed {
			r.mu.RUnlock()
			return nil, ErrClosed
		}
		if e := r.pools[s.ID]; e != nil && e.key == key {
			if hold {
				e.refs.Add(1)
			}
			e.used.Store(r.cfg.now().UnixNano())
			r.mu.RUnlock()
			return e, nil
		}
		r.mu.RUnlock()
		if attempt == 3 {
			return nil, r.refuse(ctx, s, fmt.Errorf("%w: sandbox %q: its pool was replaced or evicted as soon as it was opened (test database changing, or more busy sandboxes than WithMaxPools)", ErrNoTestDatabase, s.ID))
		}
		if err := r.open(ctx, s, key); err != nil {
			if errors.Is(err, ErrClosed) {
				return nil, err
			}
			return nil, r.refuse(ctx, s, noTestDatabase(s.ID, err))
		}
	}
}

// noTestDatabase makes sure err wraps ErrNoTestDatabase, whoever made it.
func noTestDatabase(id string, err error) error {
	if errors.Is(err, ErrNoTestDatabase) {
		return err
	}
	return fmt.Errorf("%w: sandbox %q: %w", ErrNoTestDatabase, id, err)
}

func (r *Router) release(e *entry) {
	if e.refs.Add(-1) == 0 && e.retired.Load() {
		r.closeAsync(e)
	}
}

// open opens the pool of s once, however many requests wait for it.
func (r *Router) open(ctx context.Context, s propagation.Sandbox, key string) error {
	ch := r.flights.DoChan(s.ID, func() (any, error) {
		octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.openTimeout)
		defer cancel()
		defer context.AfterFunc(r.done, cancel)()
		return nil, r.openPool(octx, s, key)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("%w: sandbox %q: gave up waiting for it: %w", ErrNoTestDatabase, s.ID, ctx.Err())
	}
}

func (r *Router) openPool(ctx context.Context, s propagation.Sandbox, key string) error {
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return ErrClosed
	}
	r.pending.Add(1)
	e := r.pools[s.ID]
	r.mu.RUnlock()
	defer r.pending.Done()
	if e != nil && e.key == key {
		return nil // opened by the flight this request just missed
	}

	cfg, err := r.provider.Open(ctx, s.ID, key)
	if err != nil {
		return err
	}
	if cfg == nil {
		return fmt.Errorf("%w: sandbox %q: provider returned no configuration", ErrNoTestDatabase, s.ID)
	}
	if r.cfg.poolConfig != nil {
		r.cfg.poolConfig(s.ID, cfg)
	}
	target := describe(&cfg.ConnConfig.Config)
	if sameDatabase(&cfg.ConnConfig.Config, r.base) {
		return fmt.Errorf("%w: sandbox %q: its test database %s is the baseline database", ErrNoTestDatabase, s.ID, target)
	}
	pool, err := newPool(ctx, cfg)
	if err != nil {
		return fmt.Errorf("opening the pool of %s: %w", target, err)
	}
	e = &entry{id: s.ID, key: key, target: target, pool: pool}
	e.used.Store(r.cfg.now().UnixNano())

	var retire []*entry
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		pool.Close()
		return ErrClosed
	}
	if old := r.pools[s.ID]; old != nil {
		retire = append(retire, r.removeLocked(old))
	}
	r.pools[s.ID] = e
	for len(r.pools) > r.cfg.maxPools {
		var lru *entry
		for _, c := range r.pools {
			if c != e && (lru == nil || c.used.Load() < lru.used.Load()) {
				lru = c
			}
		}
		retire = append(retire, r.removeLocked(lru))
	}
	r.mu.Unlock()
	for _, old := range retire {
		r.retire(old)
	}
	audit.Emit(ctx, r.cfg.logger, audit.Event{
		Decision: audit.Routed,
		Sandbox:  s,
		Protocol: audit.SQL,
		Target:   target,
		Reason:   "opened the test database pool",
	})
	return nil
}

// newPool is pgxpool.NewWithConfig, with its panic on a configuration not
// made by ParseConfig turned into an error.
func newPool(ctx context.Context, cfg *pgxpool.Config) (p *pgxpool.Pool, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("%v", v)
		}
	}()
	return pgxpool.NewWithConfig(ctx, cfg)
}

// removeLocked takes e out of the pool map; r.mu must be held. The entry
// keeps a count in r.pending until its pool is closed.
func (r *Router) removeLocked(e *entry) *entry {
	delete(r.pools, e.id)
	r.pending.Add(1)
	return e
}

// retire closes e's pool once no call is using it.
func (r *Router) retire(e *entry) {
	e.retired.Store(true)
	if e.refs.Load() == 0 {
		r.closeAsync(e)
	}
}

// closeAsync closes e's pool in the background: Close waits for the
// connections still checked out (rows not yet closed, open transactions).
func (r *Router) closeAsync(e *entry) {
	e.once.Do(func() {
		go func() {
			defer r.pending.Done()
			e.pool.Close()
		}()
	})
}

func (r *Router) refuse(ctx context.Context, s propagation.Sandbox, err error) error {
	if r.cfg.logger != nil {
		audit.Emit(ctx, r.cfg.logger, audit.Event{
			Decision: audit.Rejected,
			Sandbox:  s,
			Protocol: audit.SQL,
			Reason:   err.Error(),
		})
	}
	return err
}

// OpenPools returns the IDs of the sandboxes whose pools are open, sorted.
func (r *Router) OpenPools() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.pools))
	for id := range r.pools {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// CloseIdle closes the sandbox pools that have not been used for the idle
// timeout ([WithIdleTimeout]) by the router's clock and have no call of the
// router running on them. A pool's checked-out connections (open rows and
// transactions) keep it open until they are released. The router calls it
// periodically by itself; it is exported for tests and for callers that
// want to release connections at a moment of their choosing.
func (r *Router) CloseIdle() {
	if r.cfg.idleTimeout <= 0 {
		return
	}
	cutoff := r.cfg.now().Add(-r.cfg.idleTimeout).UnixNano()
	var retire []*entry
	r.mu.Lock()
	for _, e := range r.pools {
		if e.used.Load() <= cutoff && e.refs.Load() == 0 {
			retire = append(retire, r.removeLocked(e))
		}
	}
	r.mu.Unlock()
	for _, e := range retire {
		r.retire(e)
	}
}

// Destroy closes the pool of sandbox id and drops its test database (or
// schema), which must have been created by the provider. It needs a
// provider that is a [Reclaimer]. Queries of the sandbox still running fail;
// a later request for the sandbox creates a fresh test database.
func (r *Router) Destroy(ctx context.Context, id string) error {
	rec, ok := r.provider.(Reclaimer)
	if !ok {
		return fmt.Errorf("dbroute: Destroy: provider %T does not remove test databases: %w", r.provider, errors.ErrUnsupported)
	}
	if err := propagation.ValidateID(id); err != nil {
		return fmt.Errorf("dbroute: Destroy: %w", err)
	}
	r.mu.Lock()
	e := r.pools[id]
	if e != nil {
		r.removeLocked(e)
	}
	r.mu.Unlock()
	if e != nil {
		r.retire(e)
	}
	return rec.Destroy(ctx, id)
}

// Reap drops the test databases (or schemas) the provider created for
// sandboxes that are no longer in the route table given with [WithTable]
// (expired or removed), once they are older than the reap grace
// ([WithReapGrace]). It returns the IDs of the sandboxes whose test
// databases it dropped; objects the provider did not create are never
// touched. Call it periodically, from one process or from all of them.
func (r *Router) Reap(ctx context.Context) ([]string, error) {
	t := r.cfg.table
	if t == nil {
		return nil, errors.New("dbroute: Reap needs a route table (WithTable)")
	}
	rec, ok := r.provider.(Reclaimer)
	if !ok {
		return nil, fmt.Errorf("dbroute: Reap: provider %T does not remove test databases: %w", r.provider, errors.ErrUnsupported)
	}
	owned, err := rec.Provisioned(ctx)
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool)
	for _, sb := range t.Sandboxes() {
		live[sb.ID] = true
	}
	now := r.cfg.now()
	var dropped []string
	var errs []error
	for _, p := range owned {
		if live[p.ID] || now.Sub(p.Created) < r.cfg.reapGrace {
			continue
		}
		if _, ok := t.Sandbox(p.ID); ok {
			continue // it appeared since the list was taken
		}
		if err := r.Destroy(ctx, p.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		dropped = append(dropped, p.ID)
	}
	return dropped, errors.Join(errs...)
}

// Close closes every sandbox pool, waiting for their checked-out
// connections to be released, stops the idle janitor and closes the
// provider if it has a Close method. It does not close the baseline pool.
// Sandbox requests after Close fail with [ErrClosed]; baseline requests
// still go to the baseline pool.
func (r *Router) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.cancel()
	entries := make([]*entry, 0, len(r.pools))
	for _, e := range r.pools {
		entries = append(entries, r.removeLocked(e))
	}
	r.mu.Unlock()
	close(r.stop)
	r.janitor.Wait()
	for _, e := range entries {
		e.retired.Store(true)
		e.once.Do(func() {
			defer r.pending.Done()
			e.pool.Close()
		})
	}
	r.pending.Wait()
	if c, ok := r.provider.(interface{ Close() }); ok {
		c.Close()
	}
}

// The query methods of *pgxpool.Pool.

// Exec runs sql on the pool ctx resolves to (see [Router.Pool]).
func (r *Router) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.Exec(ctx, sql, args...)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer r.release(e)
	return e.pool.Exec(ctx, sql, args...)
}

// Query runs sql on the pool ctx resolves to. On error the returned rows
// are in an error state, as with [pgxpool.Pool.Query].
func (r *Router) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.Query(ctx, sql, args...)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return errRows{err}, err
	}
	defer r.release(e)
	return e.pool.Query(ctx, sql, args...)
}

// QueryRow runs sql on the pool ctx resolves to; errors are reported by
// the row's Scan.
func (r *Router) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.QueryRow(ctx, sql, args...)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return errRow{err}
	}
	defer r.release(e)
	return e.pool.QueryRow(ctx, sql, args...)
}

// Begin starts a transaction on the pool ctx resolves to.
func (r *Router) Begin(ctx context.Context) (pgx.Tx, error) {
	return r.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction with txOptions on the pool ctx resolves to.
// The transaction stays on that pool whatever context its own methods get.
func (r *Router) BeginTx(ctx context.Context, txOptions pgx.TxOptions) (pgx.Tx, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.BeginTx(ctx, txOptions)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return nil, err
	}
	defer r.release(e)
	return e.pool.BeginTx(ctx, txOptions)
}

// SendBatch sends b to the pool ctx resolves to. On error every result of
// the returned [pgx.BatchResults] reports it.
func (r *Router) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.SendBatch(ctx, b)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	defer r.release(e)
	return e.pool.SendBatch(ctx, b)
}

// CopyFrom copies rowSrc into tableName on the pool ctx resolves to.
func (r *Router) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.CopyFrom(ctx, tableName, columnNames, rowSrc)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return 0, err
	}
	defer r.release(e)
	return e.pool.CopyFrom(ctx, tableName, columnNames, rowSrc)
}

// Acquire checks a connection out of the pool ctx resolves to. Release it
// when done; the connection stays on that pool whatever context its own
// methods get.
func (r *Router) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.Acquire(ctx)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return nil, err
	}
	defer r.release(e)
	return e.pool.Acquire(ctx)
}

// AcquireFunc acquires a connection from the pool ctx resolves to, calls f
// with it and releases it.
func (r *Router) AcquireFunc(ctx context.Context, f func(*pgxpool.Conn) error) error {
	c, err := r.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return f(c)
}

// Ping checks the pool ctx resolves to.
func (r *Router) Ping(ctx context.Context) error {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.Ping(ctx)
	}
	e, err := r.sandbox(ctx, s, true)
	if err != nil {
		return err
	}
	defer r.release(e)
	return e.pool.Ping(ctx)
}

// sameDatabase reports whether a and b name the same database on the same
// server, as far as their settings tell (a host given by two different
// names is not recognised).
func sameDatabase(a, b *pgconn.Config) bool {
	return strings.EqualFold(a.Host, b.Host) && a.Port == b.Port && a.Database == b.Database
}

// describe names the database of c for audit records and errors, without
// credentials.
func describe(c *pgconn.Config) string {
	var b strings.Builder
	b.WriteString(c.Host)
	if !strings.HasPrefix(c.Host, "/") {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(c.Port)))
	}
	b.WriteByte('/')
	b.WriteString(c.Database)
	if sp := c.RuntimeParams["search_path"]; sp != "" {
		b.WriteString("?search_path=")
		b.WriteString(sp)
	}
	return b.String()
}
