package breaker

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// State is the state of a key's circuit breaker.
type State int8

// The states, in gobreaker's order.
const (
	StateClosed State = iota
	StateHalfOpen
	StateOpen
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	}
	return "unknown"
}

// numShards splits the key map so that calls of different sandboxes rarely
// meet on a lock. A power of two.
const numShards = 64

// Group holds one budget per key: a circuit breaker, a token bucket and a
// cap on calls in flight. Keys are sandbox IDs; baseline traffic is the
// empty key and has a budget only when [Settings.Baseline] is set.
//
// A Group is safe for concurrent use. Build it with [NewGroup]; the zero
// value is not usable.
type Group struct {
	cfg      config
	ins      instruments
	seed     maphash.Seed
	hashMask uint64             // all ones; tests keep fewer bits, to make hashes collide
	cb       gobreaker.Settings // template of every key's breaker

	epoch        time.Time              // t = nanoseconds of the group's clock since epoch
	touch        int64                  // granularity of lastUsed
	compactAfter int64                  // a key idle this long is compacted by the sweep
	pol          atomic.Pointer[policy] // the policy last resolved, shared by keys alike
	sweepEvery   int64                  // one sweep step is due every sweepEvery
	sweepAt      atomic.Int64
	sweepMu      sync.Mutex // held by the one sweep step running
	cursor       sweepCursor
	watch        atomic.Pointer[routesWatch]

	shards [numShards]shard
}

type shard struct {
	tab  atomic.Pointer[table] // read without mu, replaced under it
	mu   sync.Mutex            // held by whoever changes tab
	n    int                   // keys in tab
	next int                   // the slot of tab the next growth step looks at
	peak int                   // most keys tab held since it was made
}

// sweepCursor is where the next sweep step starts; sweepMu guards it.
type sweepCursor struct {
	shard int
	pos   int
}

// Bounds of the sweep work a call may do, so that no call pays for more
// than a few keys' eviction however many keys went idle.
const (
	// sweepBatch is how many keys a timed sweep step looks at.
	sweepBatch = 32
	// growthBatch is how many keys of its shard a call that creates a key
	// looks at, so that a shard cannot grow by more than its live keys
	// between timed steps.
	growthBatch = 2
	// emptyScan is how many empty slots of a table a sweep may pass per
	// key it may look at.
	emptyScan = 8
	// stepsPerIdle is how many timed steps are due per IdleTimeout.
	stepsPerIdle = 2048
	// compactIdle: a key idle for IdleTimeout/compactIdle is compacted
	// when the sweep looks at it.
	compactIdle = 4
)

// routesWatch notices changes of the route table: ch is closed at the next
// change, gen counts the changes seen.
type routesWatch struct {
	ch  <-chan struct{}
	gen uint64
}

// gobreakerTimeout is the open timeout handed to gobreaker. gobreaker reads
// time.Now and cannot take a clock, so the group keeps the open period
// itself, on its own clock, and never calls a key's gobreaker while the
// group holds that key open. Once the group's open period is over, gobreaker's
// own (this tiny) timeout has long passed too, so gobreaker moves to
// half-open at the first probe result it is given.
const gobreakerTimeout = time.Nanosecond

// NewGroup returns a group with settings s (see [Settings] for the zero
// values) and the dependencies set by opts.
func NewGroup(s Settings, opts ...Option) *Group {
	cfg := newConfig(s, opts)
	g := &Group{
		cfg:      cfg,
		ins:      newInstruments(cfg.meterProvider, cfg.Name),
		seed:     maphash.MakeSeed(),
		hashMask: ^uint64(0),
		epoch:    cfg.now(),
	}
	g.touch = int64(cfg.IdleTimeout / 64)
	g.compactAfter = int64(cfg.IdleTimeout / compactIdle)
	g.sweepEvery = max(1, int64(cfg.IdleTimeout)/stepsPerIdle)
	g.sweepAt.Store(g.sweepEvery)
	for i := range g.shards {
		g.shards[i].tab.Store(newTable(minSlots))
	}
	if cfg.routes != nil {
		g.watch.Store(&routesWatch{ch: cfg.routes.Changed()})
	}
	failures := cfg.Failures
	g.cb = gobreaker.Settings{
		MaxRequests: cfg.Probes,
		Timeout:     gobreakerTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsExcluded:  func(err error) bool { return err == errExcluded },
	}
	return g
}

// nothing is the done function of calls that have no budget or were
// refused.
func nothing(error) {}

// Allow asks the budget of the sandbox in ctx (baseline traffic when ctx has
// none) whether a call may go ahead. It returns done, which must be called
// exactly once with the call's outcome (nil for a success; see
// [Settings.IsFailure] and [HTTPStatus]), or an error wrapping [ErrOpen],
// [ErrThrottled] or [ErrTooManyInFlight] with a retry-after hint (see
// [RetryAfter]); done is then a no-op, never nil.
//
// Baseline traffic without a budget returns at once and allocates nothing;
// so does an admitted call of a sandbox whose key is warm.
func (g *Group) Allow(ctx context.Context) (done func(error), err error) {
	s, _ := propagation.FromContext(ctx)
	return g.AllowSandbox(ctx, s)
}

// AllowSandbox is [Group.Allow] for the sandbox s (baseline traffic when
// s.ID is empty) instead of the one in ctx; ctx still carries the call's
// trace and is handed to the logger and the meter.
func (g *Group) AllowSandbox(ctx context.Context, s propagation.Sandbox) (done func(error), err error) {
	if s.ID == "" && g.cfg.Baseline == nil {
		return nothing, nil
	}
	now := g.cfg.now()
	t := g.since(now)
	h := g.hash(s.ID)
	for locked := false; ; locked = true {
		// Again after the key was evicted or was being compacted: under
		// the shard's lock, which waits for the sweep to be done with it.
		e := g.entry(s, h, t, locked)
		done, err, again := e.allow(g, ctx, now, t)
		if !again {
			g.maybeSweep(t)
			return done, err
		}
	}
}

// GuardsBaseline reports whether traffic without a sandbox has a budget
// ([Settings.Baseline] is set). Middleware asks once, when it is built, so
// that baseline traffic skips the group altogether when it has none.
func (g *Group) GuardsBaseline() bool { return g.cfg.Baseline != nil }

// State returns the state of the breaker of sandbox id ("" for baseline
// traffic) now: closed for a key the group does not hold, half-open for an
// open breaker whose open timeout has run out.
func (g *Group) State(id string) State {
	e := g.lookup(id)
	if e == nil {
		return StateClosed
	}
	p := e.cur.Load()
	if p.st() == StateOpen && g.since(g.cfg.now()) >= p.openUntil {
		return StateHalfOpen
	}
	return p.st()
}

// Len returns the number of keys the group holds.
func (g *Group) Len() int {
	n := 0
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Sweep evicts every idle key now and returns how many it evicted. A key is
// idle when it had no call for [Settings.IdleTimeout] (no call started, no
// failure reported), has no call in flight, its breaker is not open and
// its token bucket has refilled. Calling Sweep is optional: calls sweep a
// part of the keys as they go, so that every key is looked at about once
// per IdleTimeout while the group is used.
func (g *Group) Sweep() int {
	t := g.since(g.cfg.now())
	n := 0
	for i := range g.shards {
		n += g.sweepShard(&g.shards[i], t)
	}
	return n
}

func (g *Group) since(now time.Time) int64 { return int64(now.Sub(g.epoch)) }

// hash is the hash of key id: its low bits pick the shard, its high bits
// the home slot in the shard's table. Never 0, which marks an empty slot.
func (g *Group) hash(id string) uint64 {
	return max(1, maphash.String(g.seed, id)&g.hashMask)
}

func (g *Group) shardOf(h uint64) *shard { return &g.shards[h&(numShards-1)] }

func (g *Group) lookup(id string) *entry {
	h := g.hash(id)
	sh := g.shardOf(h)
	if e := sh.tab.Load().find(h, id); e != nil {
		return e
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.tab.Load().find(h, id)
}

// entry returns the key of s, of hash h, creating it when needed; locked:
// look it up under the shard's lock.
func (g *Group) entry(s propagation.Sandbox, h uint64, t int64, locked bool) *entry {
	sh := g.shardOf(h)
	if !locked {
		if e := sh.tab.Load().find(h, s.ID); e != nil {
			return e
		}
	}
	sh.mu.Lock()
	e := sh.tab.Load().find(h, s.ID)
	sh.mu.Unlock()
	if e != nil {
		return e
	}
	ne := g.newEntry(s, t)
	sh.mu.Lock()
	if e = sh.tab.Load().find(h, s.ID); e == nil {
		e = ne
		sh.sweepFrom(g, &sh.next, growthBatch, t)
		sh.insert(h, e)
	}
	sh.mu.Unlock()
	return e
}

// insert adds e, of hash h, to sh, growing its table to keep it at most
// 3/4 full; sh.mu is held.
func (sh *shard) insert(h uint64, e *entry) {
	tab := sh.tab.Load()
	if 4*(sh.n+1) > 3*len(tab.slots) {
		tab = tab.rehash(2 * len(tab.slots))
		sh.tab.Store(tab)
	}
	tab.insert(h, e)
	sh.n++
	sh.peak = max(sh.peak, sh.n)
}

// maybeSweep runs one timed sweep step when one is due: it looks at the
// next sweepBatch keys, shard after shard, and evicts the idle ones. However
// many steps fell due during a pause, a call runs at most one, and none
// while another call runs one.
func (g *Group) maybeSweep(t int64) {
	next := g.sweepAt.Load()
	if t < next {
		return
	}
	if !g.sweepAt.CompareAndSwap(next, t+g.sweepEvery) {
		return
	}
	if !g.sweepMu.TryLock() {
		return
	}
	defer g.sweepMu.Unlock()
	c := &g.cursor
	left := sweepBatch
	for range numShards + 1 {
		sh := &g.shards[c.shard]
		sh.mu.Lock()
		left -= sh.sweepFrom(g, &c.pos, left, t)
		// Stopped inside the shard: at its bound of keys or of empty slots.
		inside := c.pos < len(sh.tab.Load().slots)
		if !inside {
			c.shard, c.pos = (c.shard+1)%numShards, 0
		}
		sh.shrink()
		sh.mu.Unlock()
		if inside || left <= 0 {
			return
		}
	}
}

// sweepFrom looks at up to n keys of sh from slot *pos on (and at most
// emptyScan empty slots per key), evicting the idle ones and compacting
// those idle for a while; it returns how many keys it looked at. sh.mu is
// held.
func (sh *shard) sweepFrom(g *Group, pos *int, n int, t int64) int {
	tab := sh.tab.Load()
	if *pos >= len(tab.slots) {
		*pos = 0
	}
	seen, empty := 0, 0
	for seen < n && empty < emptyScan*n && *pos < len(tab.slots) {
		e := tab.slots[*pos].e.Load()
		if e == nil {
			empty++
			*pos++
			continue
		}
		seen++
		if g.evict(sh, e, t) {
			tab.remove(*pos) // a later key may have moved to *pos: look at it next
		} else {
			e.compact(t)
			*pos++
		}
	}
	return seen
}

// evict reports whether e is idle, and then takes it out of the group's
// accounts; the caller removes it from sh's table. sh.mu is held.
func (g *Group) evict(sh *shard, e *entry, t int64) bool {
	if !e.idle(t) {
		return false
	}
	// A call that found e before it was deleted sees dead after counting
	// itself in flight, and looks the key up again; when the call got
	// there first, e stays.
	e.set(dead, true)
	if e.inflight.Load() != 0 {
		e.set(dead, false)
		return false
	}
	sh.n--
	if e.cur.Load().st() != StateClosed {
		g.ins.open.Add(context.Background(), -1, g.ins.openOpts...)
	}
	return true
}

// shrink moves the keys of sh to a table of their size once most of its
// keys went away: a table keeps its size when keys are removed. sh.mu is
// held.
func (sh *shard) shrink() {
	if sh.peak < 64 || sh.n > sh.peak/4 {
		return
	}
	sh.tab.Store(sh.tab.Load().rehash(2 * sh.n))
	sh.peak = sh.n
}

// sweepShard evicts every idle key of sh and returns how many it evicted.
func (g *Group) sweepShard(sh *shard, t int64) int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.n
	pos := 0
	sh.sweepFrom(g, &pos, len(sh.tab.Load().slots), t)
	sh.shrink()
	return n - sh.n
}

// budgetFor resolves the budget of e's sandbox ("" for baseline).
func (g *Group) budgetFor(e *entry) Budget {
	id := e.id
	if id == "" {
		return *g.cfg.Baseline
	}
	b := g.cfg.Budget
	if g.cfg.routes != nil {
		if sb, ok := g.cfg.routes.Sandbox(id); ok && sb.Budget != nil {
			b = merge(b, Budget{Rate: sb.Budget.Rate, Burst: sb.Budget.Burst, MaxInFlight: sb.Budget.MaxInFlight})
		}
	}
	if g.cfg.Override != nil {
		// ownID: Override is the caller's, and may keep the ID it is
		// given; e.id would keep the whole entry after its eviction.
		if o, ok := g.cfg.Override(e.ownID()); ok {
			b = merge(b, o)
		}
	}
	return b
}

// routesGen returns the generation of the route table, noticing a change.
func (g *Group) routesGen() uint64 {
	w := g.watch.Load()
	if w == nil {
		return 0
	}
	select {
	case <-w.ch:
		nw := &routesWatch{ch: g.cfg.routes.Changed(), gen: w.gen + 1}
		if !g.watch.CompareAndSwap(w, nw) {
			nw = g.watch.Load()
		}
		return nw.gen
	default:
		return w.gen
	}
}

type result uint8

const (
	success result = iota
	failure
	excluded
)

func (g *Group) classify(err error) result {
	switch {
	case err == nil:
		return success
	case errors.Is(err, context.Canceled):
		return excluded
	case g.cfg.IsFailure == nil || g.cfg.IsFailure(err):
		return failure
	}
	return success
}
