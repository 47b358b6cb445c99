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
	"github.com/jackc/puddle/v2"
	"golang.org/x/sync/singleflight"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgerr"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Router sends each query to the baseline pool or to the test database of
// the sandbox in its context. It has the query methods of
// [*pgxpool.Pool], so it drops in where the pool was.
type Router struct {
	baseline *pgxpool.Pool
	provider Provider
	cfg      config
	base     *pgconn.Config // the baseline's connection settings
	metrics  instruments

	mu      sync.RWMutex
	pools   map[string]*entry
	opening int                // pool slots reserved by opens in flight
	queued  map[string]bool    // sandboxes whose open waits for a slot
	queue   []*waiter          // opens waiting for a slot, longest-waiting first
	configs map[string]*cached // what the provider returned, to reopen without provisioning
	closed  bool
	waiters atomic.Int32           // len(queue)
	head    atomic.Pointer[waiter] // queue[0], or nil

	idMu      sync.Mutex
	baseID    identity // the baseline's, once known
	baseKnown bool

	flights singleflight.Group
	pending sync.WaitGroup  // pools being opened, and pools removed but not yet closed
	done    context.Context // cancelled by Close: stops opens in flight
	cancel  context.CancelFunc
	stop    chan struct{}
	janitor sync.WaitGroup
}

// cached is the pool configuration the provider returned for a sandbox.
type cached struct {
	key string
	cfg *pgxpool.Config
}

// waiter is an open waiting for a pool slot. A slot is handed to the
// longest-waiting open directly: granted is set and ch closed, under r.mu,
// with the slot already counted in r.opening.
type waiter struct {
	id      string // the sandbox
	ch      chan struct{}
	granted bool
}

// entry is one open sandbox pool.
type entry struct {
	id, key string
	target  string
	pool    *pgxpool.Pool
	opened  int64        // clock, in Unix nanoseconds
	turnEnd atomic.Int64 // clock: until when the pool keeps its slot; 0 until its first call ended
	used    atomic.Int64 // clock, in Unix nanoseconds
	refs    atomic.Int64 // calls running on pool
	retired atomic.Bool  // removed from the router: close when refs drops to 0
	// draining: its turn is over and other sandboxes wait for a slot, so
	// it takes no new call; evicted once the calls running on it end.
	// Set under r.mu; read under r.mu.RLock where calls are admitted.
	draining  atomic.Bool
	drainFrom int64 // clock, when draining was set; r.mu
	once      sync.Once
}

// New returns a router that sends queries without a sandbox in their
// context to baseline, and queries with one to the sandbox's test database
// from provider. The router owns provider: [Router.Close] closes it when it
// has a Close method. It does not own baseline. A nil baseline or
// provider, FromTable(nil), and misconfigured options are errors wrapping
// [ErrConfig].
//
// Protect baseline itself with [Guard] so that code which bypasses the
// router cannot reach production data from a sandbox request either.
func New(baseline *pgxpool.Pool, provider Provider, opts ...RouterOption) (*Router, error) {
	if baseline == nil {
		return nil, fmt.Errorf("%w: New: nil baseline pool", ErrConfig)
	}
	if provider == nil {
		return nil, fmt.Errorf("%w: New: nil provider", ErrConfig)
	}
	if tp, ok := provider.(tableProvider); ok && tp.t == nil {
		return nil, fmt.Errorf("%w: New: FromTable(nil): nil route table", ErrConfig)
	}
	cfg, err := newRouterConfig(opts)
	if err != nil {
		return nil, err
	}
	r := &Router{
		baseline: baseline,
		provider: provider,
		cfg:      cfg,
		base:     baseline.Config().ConnConfig.Config.Copy(),
		metrics:  newInstruments(cfg.meterProvider),
		pools:    make(map[string]*entry),
		queued:   make(map[string]bool),
		configs:  make(map[string]*cached),
		stop:     make(chan struct{}),
	}
	r.done, r.cancel = context.WithCancel(context.Background())
	if rec, ok := provider.(Reclaimer); ok {
		rec.OnRemove(r.evict)
	}
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
// baseline pool for a sandbox context; the error wraps one of the classes
// of [ErrNoTestDatabase].
//
// A sandbox pool stays valid until the router closes it (idle, evicted to
// make room for another sandbox while none of its connections is checked
// out, its test database removed by a [Reclaimer], [Router.Close]); use it
// for the request at hand and resolve again for the next. The router's own query methods hold the
// pool open while they run.
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
			return nil, r.refuse(ctx, s, notInTable(t, s.ID))
		}
	}
	key, err := r.provider.Lookup(s.ID)
	if err != nil {
		return nil, r.refuse(ctx, s, classify(s.ID, err))
	}
	// opened: this request has waited for its pool (its turn came, or its
	// drain was called off); it runs on it even if the pool drains again
	// meanwhile (with a short turn, or none, it may at once), or it would
	// never get through.
	// replaced counts the pools of another test database found after an
	// open. A pool evicted before this request could use it (with a turn
	// of 0, at once) is opened again: each open waits its turn, bounded
	// by ctx.
	opened, replaced := false, 0
	for {
		r.mu.RLock()
		if r.closed {
			r.mu.RUnlock()
			return nil, ErrClosed
		}
		e := r.pools[s.ID]
		if e != nil && e.key == key && (opened || !e.draining.Load()) {
			if hold {
				e.refs.Add(1)
			}
			e.used.Store(r.cfg.now().UnixNano())
			r.mu.RUnlock()
			return e, nil
		}
		r.mu.RUnlock()
		if opened && e != nil && e.key != key {
			replaced++
		}
		if replaced == 3 {
			return nil, r.refuse(ctx, s, fmt.Errorf("%w: sandbox %q: its pool was replaced as soon as it was opened (test database changing)", ErrUnavailable, s.ID))
		}
		if err := r.open(ctx, s, key); err != nil {
			if errors.Is(err, ErrClosed) {
				return nil, err
			}
			return nil, r.refuse(ctx, s, classify(s.ID, err))
		}
		opened = true
	}
}

func (r *Router) release(e *entry) {
	if e.turnEnd.Load() == 0 {
		// The first call on the pool has ended: its turn starts now. It
		// lasts WithPoolTurn, stretched up to turnPerOpenCost times that
		// to turnPerOpenCost times what opening the pool cost (dialling,
		// checking the server, the first statement), so that swapping
		// pools takes at most a fifth of a slot's time however slow
		// dialling is.
		now := r.cfg.now().UnixNano()
		turn := int64(r.cfg.poolTurn)
		cost := max(now-e.opened, 0)
		if e.turnEnd.CompareAndSwap(0, now+max(turn, min(turnPerOpenCost*cost, turnPerOpenCost*turn))) && r.waiters.Load() > 0 {
			// This swap is over: the next one may start.
			defer r.wake()
		}
	}
	if e.refs.Add(-1) == 0 {
		if e.retired.Load() {
			r.closeAsync(e)
		} else if r.waiters.Load() > 0 && e.turnOver(r.cfg.now().UnixNano(), r.cfg.poolTurn) {
			// Only a pool that has had its turn can be handed over: the
			// waiters would look for nothing otherwise.
			r.wake()
		}
	}
}

// turnPerOpenCost: a pool keeps its slot, at least, this many times what
// opening it cost (up to this many turns), so that swaps take at most
// 1/(1+turnPerOpenCost) of a slot's time.
const turnPerOpenCost = 4

// turnOver reports whether e has had its turn at clock now.
func (e *entry) turnOver(now int64, turn time.Duration) bool {
	end := e.turnEnd.Load()
	if end == 0 {
		end = e.opened + int64(turn) // no call has ended on it yet
	}
	return end <= now
}

// after classifies err of a statement on e's pool (see later), and drops
// the pool when its database no longer exists (dropped by Reap or Destroy
// in another process): the next request provisions it again.
func (r *Router) after(e *entry, err error) error {
	if err == nil {
		return nil
	}
	if e.retired.Load() && (pgerr.Unreachable(err) || errors.Is(err, context.Canceled) || errors.Is(err, puddle.ErrClosedPool)) {
		r.mu.RLock()
		closed := r.closed
		r.mu.RUnlock()
		if closed {
			// Close closed the pool under a call that had not got a
			// connection yet (its dial or the server check cancelled,
			// or the pool closed).
			return fmt.Errorf("%w: sandbox %q: %w", ErrClosed, e.id, err)
		}
	}
	if pgerr.IsCode(err, pgerr.InvalidCatalog) {
		r.mu.Lock()
		cur := r.pools[e.id] == e
		if cur {
			r.removeLocked(e)
		}
		if c := r.configs[e.id]; c != nil && c.key == e.key {
			delete(r.configs, e.id)
		}
		r.mu.Unlock()
		if cur {
			r.retire(e)
		}
		if _, ok := r.provider.(Reclaimer); ok {
			// Dropped elsewhere: the next request creates it again.
			return fmt.Errorf("%w: sandbox %q: its test database was dropped; the next request creates it again: %w", ErrUnavailable, e.id, err)
		}
	}
	return r.lost(e, err)
}

// lost classifies err of a statement on e's pool (see later) and, when
// the pool could not connect (refused, not a call that gave up) and has no
// connection left, ends the pool's turn: its test database cannot be
// reached, it holds nothing worth a slot, and a sandbox waiting for one
// must not wait behind it for a turn.
func (r *Router) lost(e *entry, err error) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) &&
		e.pool.Stat().TotalConns() == 0 {
		now := r.cfg.now().UnixNano()
		for end := e.turnEnd.Load(); end == 0 || end > now; end = e.turnEnd.Load() {
			if e.turnEnd.CompareAndSwap(end, now) {
				break
			}
		}
	}
	return later(e.id, err)
}

// wake hands the free slots, and those of the pools that can be evicted,
// to the opens waiting longest.
func (r *Router) wake() {
	r.mu.Lock()
	victims := r.grantLocked()
	r.mu.Unlock()
	for _, v := range victims {
		r.retire(v)
	}
}

// grantLocked hands slots to the waiting opens in arrival order while
// there is a free slot or a pool to evict, and returns the evicted pools,
// to retire once r.mu is released. r.mu must be held.
//
// It evicts one pool at a time: not while another swap is under way (a
// pool opened but its first call not ended, within its turn).
// Swaps that start together dial together, compete for the same CPUs and
// leave their slots idle together, and their turns, ending together, keep
// them in step.
func (r *Router) grantLocked() []*entry {
	var victims []*entry
	for len(r.queue) > 0 && !r.closed {
		if len(r.pools)+r.opening >= r.cfg.maxPools {
			if len(victims) > 0 || r.swappingLocked() {
				break
			}
			v := r.evictableLocked()
			if v == nil {
				r.drainLocked()
				break
			}
			victims = append(victims, r.removeLocked(v))
			if len(r.pools)+r.opening >= r.cfg.maxPools {
				// Still full: undrainLocked granted a slot past the
				// limit, which this one pays back.
				break
			}
		}
		w := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.opening++
		w.granted = true
		close(w.ch)
	}
	r.queueChangedLocked()
	return victims
}

// drainLocked starts to drain, when every slot is taken and none can be
// evicted, the pool whose turn ended first: it takes no new call (its
// sandbox's requests wait for a slot behind the others) and is evicted as
// soon as the calls running on it end and its connections are back. One
// pool drains at a time. A pool that has not drained within a turn (a
// connection held for long: a transaction, an open Rows, an Acquire) takes
// calls again for a new turn, so that a request holding a connection and
// calling the router again for its sandbox waits one turn at most. r.mu
// must be held.
func (r *Router) drainLocked() {
	now := r.cfg.now().UnixNano()
	var first *entry
	for _, c := range r.pools {
		if c.draining.Load() {
			if now-c.drainFrom < int64(r.cfg.poolTurn) {
				return
			}
			r.undrainLocked(c, now)
			continue
		}
		if !c.turnOver(now, r.cfg.poolTurn) {
			continue
		}
		if first == nil || c.turnEnd.Load() < first.turnEnd.Load() {
			first = c
		}
	}
	if first != nil {
		first.drainFrom = now
		first.draining.Store(true)
	}
}

// undrainLocked lets e, which did not drain within a turn, take calls
// again for a new turn, and lets the open of its sandbox that waits in the
// queue (its requests that came while it drained) go on with it: openPool
// hands the slot granted here back when it finds e. r.mu must be held.
func (r *Router) undrainLocked(e *entry, now int64) {
	e.draining.Store(false)
	e.turnEnd.Store(now + int64(r.cfg.poolTurn))
	for i, w := range r.queue {
		if w.id == e.id {
			r.queue = slices.Delete(r.queue, i, i+1)
			r.queueChangedLocked()
			r.opening++
			w.granted = true
			close(w.ch)
			return
		}
	}
}

// queueChangedLocked updates what is read of r.queue without r.mu. r.mu
// must be held.
func (r *Router) queueChangedLocked() {
	r.waiters.Store(int32(len(r.queue)))
	if len(r.queue) > 0 {
		r.head.Store(r.queue[0])
	} else {
		r.head.Store(nil)
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
		r.mu.RLock()
		queued := r.queued[s.ID]
		r.mu.RUnlock()
		if queued {
			r.metrics.limit(ctx, outcomeGaveUp)
			return fmt.Errorf("%w: %w: sandbox %q: all %d sandbox pools are in use: %w", ErrUnavailable, ErrPoolLimit, s.ID, r.cfg.maxPools, context.Cause(ctx))
		}
		return fmt.Errorf("%w: sandbox %q: gave up waiting for its test database: %w", ErrUnavailable, s.ID, context.Cause(ctx))
	}
}

func (r *Router) openPool(ctx context.Context, s propagation.Sandbox, key string) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.pending.Add(1)
	e := r.pools[s.ID]
	var old *entry
	if e != nil && e.key != key {
		old = r.removeLocked(e) // its test database changed: free its slot
	}
	r.mu.Unlock()
	defer r.pending.Done()
	if old != nil {
		r.retire(old)
	} else if e != nil && !e.draining.Load() {
		return nil // opened by the flight this request just missed
	}
	if err := r.reserve(ctx, s); err != nil {
		return err
	}
	r.mu.Lock()
	if d := r.pools[s.ID]; d != nil && d.key == key {
		// Its own pool has not been evicted (the slot came from another
		// pool, or its drain timed out): it takes calls again, for a new
		// turn, and the slot goes back.
		if d.draining.Load() {
			d.draining.Store(false)
			d.turnEnd.Store(r.cfg.now().UnixNano() + int64(r.cfg.poolTurn))
		}
		r.opening--
		victims := r.grantLocked()
		r.mu.Unlock()
		for _, v := range victims {
			r.retire(v)
		}
		return nil
	}
	r.mu.Unlock()
	e, err := r.build(ctx, s, key)
	r.mu.Lock()
	r.opening--
	if err == nil && r.closed {
		err = ErrClosed
	}
	if err != nil {
		r.mu.Unlock()
		if e != nil {
			e.pool.Close()
		}
		if r.waiters.Load() > 0 {
			r.wake()
		}
		return err
	}
	if d := r.pools[s.ID]; d != nil {
		// Its draining pool, given a new turn as this one opened: this
		// one replaces it.
		r.removeLocked(d)
		defer r.retire(d)
	}
	r.pools[s.ID] = e
	r.mu.Unlock()
	audit.Emit(ctx, r.cfg.logger, audit.Event{
		Decision: audit.Routed,
		Sandbox:  s,
		Protocol: audit.SQL,
		Target:   e.target,
		Reason:   "opened the test database pool",
	})
	return nil
}

// build provisions s's test database (or reuses what the provider said
// last time), opens its pool and checks that it is not the baseline.
func (r *Router) build(ctx context.Context, s propagation.Sandbox, key string) (*entry, error) {
	r.mu.RLock()
	c := r.configs[s.ID]
	r.mu.RUnlock()
	var cfg *pgxpool.Config
	if c != nil && c.key == key {
		cfg = c.cfg.Copy()
	} else {
		pc, err := r.provider.Open(ctx, s.ID, key)
		if err != nil {
			return nil, err
		}
		if pc == nil {
			return nil, fmt.Errorf("%w: sandbox %q: provider returned no configuration", ErrNoTestDatabase, s.ID)
		}
		r.remember(s.ID, key, pc)
		cfg = pc.Copy()
	}
	if r.cfg.poolConfig != nil {
		r.cfg.poolConfig(s.ID, cfg)
	}
	target := describe(&cfg.ConnConfig.Config)
	if sameDatabase(&cfg.ConnConfig.Config, r.base) {
		return nil, fmt.Errorf("%w: sandbox %q: its test database %s is the baseline database", ErrNoTestDatabase, s.ID, target)
	}
	r.checkEveryConn(cfg, target)
	pool, err := newPool(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the pool of %s: %w", target, err)
	}
	now := r.cfg.now().UnixNano()
	e := &entry{id: s.ID, key: key, target: target, pool: pool, opened: now}
	e.used.Store(now)
	return e, nil
}

func (r *Router) remember(id, key string, cfg *pgxpool.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.configs) >= 16*r.cfg.maxPools+64 {
		for k := range r.configs {
			if r.pools[k] == nil {
				delete(r.configs, k)
				break
			}
		}
	}
	r.configs[id] = &cached{key: key, cfg: cfg}
}

// reserve takes a pool slot for s, evicting a pool nobody is using, or
// waits for one until ctx ends. Waiting opens get the slots in arrival
// order: a slot that frees up is handed to the longest-waiting one, and an
// open that arrives while others wait queues behind them.
func (r *Router) reserve(ctx context.Context, s propagation.Sandbox) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	var victims []*entry
	if len(r.queue) == 0 {
		if len(r.pools)+r.opening >= r.cfg.maxPools {
			if v := r.evictableLocked(); v != nil {
				victims = append(victims, r.removeLocked(v))
			}
		}
		// (Evicting one pool may leave every slot taken: undrainLocked
		// may have granted one past the limit.)
		if len(r.pools)+r.opening < r.cfg.maxPools {
			r.opening++
			r.mu.Unlock()
			for _, v := range victims {
				r.retire(v)
			}
			return nil
		}
	}
	w := &waiter{id: s.ID, ch: make(chan struct{})}
	r.queue = append(r.queue, w)
	r.queueChangedLocked()
	r.queued[s.ID] = true
	victims = append(victims, r.grantLocked()...) // a slot freed up that no one handed on yet
	r.mu.Unlock()
	for _, v := range victims {
		r.retire(v)
	}
	r.metrics.limit(ctx, outcomeWaited)
	audit.Emit(ctx, r.cfg.logger, audit.Event{
		Decision: audit.Throttled,
		Sandbox:  s,
		Protocol: audit.SQL,
		Reason:   fmt.Sprintf("all %d sandbox pools are in use (WithMaxPools): waiting for one", r.cfg.maxPools),
	})
	tick := time.NewTicker(waitPoll)
	defer tick.Stop()
	for {
		select {
		case <-w.ch:
			r.mu.Lock()
			delete(r.queued, s.ID)
			r.mu.Unlock()
			if !w.granted {
				return ErrClosed
			}
			return nil
		case <-tick.C:
			// A pool's turn ends by the clock, not by an event. Only the
			// longest-waiting open looks: the others could not take a
			// slot before it.
			if r.head.Load() == w {
				r.wake()
			}
		case <-ctx.Done():
			r.mu.Lock()
			delete(r.queued, s.ID)
			if r.closed {
				// Close cancelled ctx (an open's context ends with the
				// router) as it let the waiters go: say why.
				r.mu.Unlock()
				return ErrClosed
			}
			var victims []*entry
			if w.granted {
				// Handed a slot as ctx ended: pass it on.
				r.opening--
				victims = r.grantLocked()
			} else if i := slices.Index(r.queue, w); i >= 0 {
				r.queue = slices.Delete(r.queue, i, i+1)
				r.queueChangedLocked()
			}
			r.mu.Unlock()
			for _, v := range victims {
				r.retire(v)
			}
			return fmt.Errorf("%w: %w: all %d sandbox pools are in use: %w", ErrUnavailable, ErrPoolLimit, r.cfg.maxPools, context.Cause(ctx))
		}
	}
}

// waitPoll is how often the waiting opens look for a slot again without
// being woken (a turn ending by the clock, a transaction ending, a
// connection released do not wake them).
const waitPoll = 10 * time.Millisecond

// swappingLocked reports whether a pool has been opened and its first
// call (which dials) has not ended yet, within its turn. (An open still
// provisioning does not count: that may take long.) r.mu must be held.
func (r *Router) swappingLocked() bool {
	now := r.cfg.now().UnixNano()
	for _, c := range r.pools {
		if c.turnEnd.Load() == 0 && !c.turnOver(now, r.cfg.poolTurn) {
			return true
		}
	}
	return false
}

// evictableLocked returns the least recently used pool that no call is
// running on, none of whose connections is checked out, and that has had
// its turn ([WithPoolTurn]); nil if there is none. r.mu must be held.
func (r *Router) evictableLocked() *entry {
	now := r.cfg.now().UnixNano()
	var lru *entry
	for _, c := range r.pools {
		if c.refs.Load() != 0 || !c.turnOver(now, r.cfg.poolTurn) || (lru != nil && c.used.Load() >= lru.used.Load()) {
			continue
		}
		if c.pool.Stat().AcquiredConns() != 0 {
			continue
		}
		lru = c
	}
	return lru
}

// checkEveryConn makes every new connection of a sandbox pool ask the
// servers themselves whether it reached the baseline database: same
// cluster (system identifier) and same database (OID), whatever the
// connection strings say. A connection that did is closed before any
// statement of the sandbox runs on it, and the statement fails with
// ErrNoTestDatabase. The check runs on each new connection, so a name that
// starts to resolve to the baseline server later is caught too.
func (r *Router) checkEveryConn(cfg *pgxpool.Config, target string) {
	next := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		test, err := identify(ctx, c)
		if err != nil {
			return fmt.Errorf("asking %s who it is: %w", target, err)
		}
		same, err := r.isBaseline(test)
		if err != nil {
			return err
		}
		if same {
			return fmt.Errorf("%w: the test database %s is the baseline database (server %s, database OID %d)", ErrNoTestDatabase, target, test.server, test.db)
		}
		if next != nil {
			return next(ctx, c)
		}
		return nil
	}
}

// isBaseline compares id with the baseline's identity, asked once (again
// on a mismatch when the fallback identity, which changes when the server
// restarts, is in use).
func (r *Router) isBaseline(id identity) (bool, error) {
	for fresh := false; ; fresh = true {
		r.idMu.Lock()
		base, known := r.baseID, r.baseKnown
		r.idMu.Unlock()
		if !known || fresh {
			// A context of its own: the request's carries a sandbox,
			// which a guarded baseline refuses.
			ctx, cancel := context.WithTimeout(r.done, r.cfg.openTimeout)
			c, err := r.baseline.Acquire(ctx)
			if err == nil {
				base, err = identify(ctx, c.Conn())
				c.Release()
			}
			cancel()
			if err != nil {
				return false, fmt.Errorf("%w: asking the baseline who it is, to tell it from the test database: %w", ErrUnavailable, err)
			}
			r.idMu.Lock()
			r.baseID, r.baseKnown = base, true
			r.idMu.Unlock()
		}
		if id == base || fresh || !base.fallback {
			return id == base, nil
		}
	}
}

// identity names a database as its server reports it.
type identity struct {
	server   string // system identifier, or the fallback
	db       uint32 // OID in pg_database
	fallback bool
}

// The server's identity: the system identifier of the cluster (the same on
// its streaming replicas), readable by every role unless an administrator
// revoked pg_control_system from PUBLIC; then the fallback: when the
// postmaster started (to the microsecond), with its port and version.
const (
	sqlIdentity         = `SELECT (SELECT system_identifier::text FROM pg_control_system()), (SELECT oid FROM pg_database WHERE datname = current_database())`
	sqlIdentityFallback = `SELECT 'started ' || pg_postmaster_start_time()::text || ' port ' || current_setting('port') || ' version ' || current_setting('server_version_num'), (SELECT oid FROM pg_database WHERE datname = current_database())`
)

func identify(ctx context.Context, c *pgx.Conn) (identity, error) {
	var id identity
	err := c.QueryRow(ctx, sqlIdentity).Scan(&id.server, &id.db)
	if pgerr.IsCode(err, pgerr.InsufficientPrivilege) {
		id.fallback = true
		err = c.QueryRow(ctx, sqlIdentityFallback).Scan(&id.server, &id.db)
	}
	return id, err
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
	if len(retire) > 0 && r.waiters.Load() > 0 {
		r.wake()
	}
}

// evict closes the pool of sandbox id (once no call uses it) and forgets
// what the provider returned for it, so that the next request asks the
// provider again: a [Reclaimer] calls it before it removes the sandbox's
// test database.
func (r *Router) evict(id string) {
	r.mu.Lock()
	e := r.pools[id]
	if e != nil {
		r.removeLocked(e)
	}
	delete(r.configs, id)
	r.mu.Unlock()
	if e != nil {
		r.retire(e)
		if r.waiters.Load() > 0 {
			r.wake()
		}
	}
}

// Close closes every sandbox pool, waiting for their checked-out
// connections to be released, stops the idle janitor and closes the
// provider if it has a Close method. It does not close the baseline pool.
// Sandbox requests after Close fail with [ErrClosed], and so do those it
// interrupts (waiting for a pool slot, or for a connection of a pool it
// closed); baseline requests still go to the baseline pool.
func (r *Router) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.cancel()
	for _, w := range r.queue {
		close(w.ch) // not granted: ErrClosed
	}
	r.queue = nil
	r.queueChangedLocked()
	entries := make([]*entry, 0, len(r.pools))
	for _, e := range r.pools {
		entries = append(entries, r.removeLocked(e))
	}
	r.mu.Unlock()
	close(r.stop)
	r.janitor.Wait()
	for _, e := range entries {
		// In the background, as retire does: pool.Close waits for the
		// connections checked out, and a call ending on the pool
		// (closeAsync, from release) must not wait for it inside
		// e.once, or the request that holds a connection and made the
		// call never gets to release it.
		e.retired.Store(true)
		r.closeAsync(e)
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
	tag, err := e.pool.Exec(ctx, sql, args...)
	return tag, r.after(e, err)
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
	rows, err := e.pool.Query(ctx, sql, args...)
	if err != nil {
		err = r.after(e, err)
		return errRows{err}, err
	}
	return laterRows{rows, s.ID}, nil
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
	return routedRow{e.pool.QueryRow(ctx, sql, args...), r, e}
}

// Begin starts a transaction on the pool ctx resolves to.
func (r *Router) Begin(ctx context.Context) (pgx.Tx, error) {
	return r.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction with txOptions on the pool ctx resolves to.
// The transaction stays on that pool whatever context its own methods get.
// A sandbox transaction's errors are classified as the router's are (a
// lost connection wraps [ErrUnavailable]).
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
	tx, err := e.pool.BeginTx(ctx, txOptions)
	if err != nil {
		return nil, r.after(e, err)
	}
	return laterTx{tx, s.ID}, nil
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
	return routedBatch{e.pool.SendBatch(ctx, b), r, e}
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
	n, err := e.pool.CopyFrom(ctx, tableName, columnNames, rowSrc)
	return n, r.after(e, err)
}

// Acquire checks a connection out of the pool ctx resolves to. Release it
// when done; the connection stays on that pool whatever context its own
// methods get. The connection is pgx's own: the errors of its methods are
// not classified (see [ErrUnavailable]).
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
	c, err := e.pool.Acquire(ctx)
	return c, r.after(e, err)
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
	return r.after(e, e.pool.Ping(ctx))
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
