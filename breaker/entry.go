package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/time/rate"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// entry is the budget of one key.
//
// The breaker's state lives in phase values: immutable, one per state the
// breaker enters, swapped under mu. A call admitted in a phase gets that
// phase's done function, so its outcome is dropped when the breaker has
// changed state since (as gobreaker drops results of an older generation).
// gobreaker counts the outcomes and decides when to open and when to close;
// the group keeps the open period on its own clock and admits the probes
// of the half-open state.
//
// Outcomes reach gobreaker through CircuitBreaker.Execute when a call is
// done (with a function that only returns the outcome), not through
// TwoStepCircuitBreaker.Allow: that allocates a closure per call, more than
// the hot path may. Admission in the closed state needs no gobreaker call,
// and a success after successes (nothing gobreaker decides on) skips it.
//
// A group holds many keys, most of them idle, so an entry is kept small:
// what only some keys need (gobreaker, the audit's actor and origin, the
// metric attributes) hangs off pointers that stay nil until needed, the
// resolved budget is shared by the keys that have the same one, and a key
// idle for a while is compacted (see compact): it lets go of what a fresh
// key would have in the same state.
type entry struct {
	// What a call reads: at 100,000 keys each call finds its key cold, so
	// these fill the entry's first two cache lines and nothing else does
	// (entries are 192 bytes, a size class whose objects start on a cache
	// line). A short ID is compared here (idLen, idBuf), the token bucket
	// is held by value, not behind a pointer to chase, and a key that
	// never left the closed state reads no phase (see phased). The Group
	// is handed to a call's methods by the call, not read from g. Each of
	// the two lines holds a field the call reads before its first atomic
	// write (idBuf in the first, lastUsed in the second), so that the
	// processor can fetch both at once: were the second line all token
	// bucket, its fetch would wait behind inflight.Add and the bucket's
	// lock.
	idLen    uint8    // len(id) when it fits in idBuf, longID when not
	idBuf    [15]byte // the ID when it fits
	pol      atomic.Pointer[policy]
	done0    func(error)  // finishes a call admitted in the first phase
	lim      rate.Limiter // the key's token bucket, used while its policy is limited
	lastUsed atomic.Int64
	inflight atomic.Int32
	flags    atomic.Uint32 // dead, dirty and phased

	// What only some calls read.
	id   string                // points into idBuf when the ID fits there
	cur  atomic.Pointer[phase] // nil: the first phase, closed
	g    *Group
	who  *[2]string // actor and origin; nil when both are empty
	opts atomic.Pointer[[numOutcomes]atomic.Pointer[[]metric.AddOption]]
	mu   sync.Mutex // serialises every call into cb and phase changes
	slow *slow      // nil until the key's breaker first counts a result
}

// longID is the idLen of an entry whose ID does not fit in idBuf.
const longID = 0xff

// hasID reports whether id is the ID of e.
func (e *entry) hasID(id string) bool {
	// longID first: it is also a length (255) an ID may have.
	if e.idLen == longID {
		return e.id == id
	}
	return int(e.idLen) == len(id) && string(e.idBuf[:len(id)]) == id
}

// slow is the state of a key's breaker beyond its phase, made when the
// breaker first counts a result; e.mu guards it. A key whose breaker is
// not closed always has it.
type slow struct {
	cb      *gobreaker.CircuitBreaker[struct{}]
	probes  uint32   // probes in flight in the half-open phase
	now     int64    // the group's clock while cb runs, for onStateChange
	changes []change // state changes not yet reported
}

// Flags of an entry.
const (
	// dead: evicted or being compacted; set and cleared under the shard
	// lock.
	dead uint32 = 1 << iota
	// dirty: gobreaker may count consecutive failures.
	dirty
	// phased: the key left its first phase, cur is set. A call reads
	// cur only then: it shares no cache line with what calls read.
	phased
)

func (e *entry) is(f uint32) bool { return e.flags.Load()&f != 0 }

func (e *entry) set(f uint32, on bool) {
	if on {
		e.flags.Or(f)
	} else {
		e.flags.And(^f)
	}
}

// phase is a state the key's breaker entered. A nil *phase is the first
// phase of a key, closed, whose done function is the entry's done0: most
// keys never leave it, and then hold no phase.
type phase struct {
	state     State
	openUntil int64       // StateOpen: end of the open period
	done      func(error) // finishes a call admitted in this phase
}

// phase returns the phase of e a call is admitted in: cur, read only once
// the key left its first phase. A call racing the change from the first
// phase may see the first: as if it came before.
func (e *entry) phase() *phase {
	if !e.is(phased) {
		return nil
	}
	return e.cur.Load()
}

// st is the state of phase p.
func (p *phase) st() State {
	if p == nil {
		return StateClosed
	}
	return p.state
}

// policy is a budget resolved at a route table generation. It is immutable,
// and keys whose budget resolved the same at the same generation share it.
type policy struct {
	budget      Budget
	maxInFlight int64 // 0: no cap
	gen         uint64
	refill      int64 // limited: nanoseconds an empty bucket takes to fill
	limited     bool  // budget has a rate limit
}

type change struct {
	from, to State
	reason   string
}

func (g *Group) newEntry(s propagation.Sandbox, t int64) *entry {
	// Own copies: the caller's strings may point into a request's headers.
	e := &entry{g: g}
	e.setID(s.ID)
	if s.Actor != "" || s.Origin != "" {
		e.who = &[2]string{strings.Clone(s.Actor), strings.Clone(s.Origin)}
	}
	e.lastUsed.Store(t)
	pol := g.policyFor(g.budgetFor(e), g.routesGen())
	e.pol.Store(pol)
	if pol.limited {
		pol.fill(&e.lim)
	}
	e.done0 = func(err error) { e.finish(nil, err) }
	return e
}

// setID sets the ID of a new entry e to an own copy of id: in the entry
// itself when it fits, so that finding the key reads no other object.
// idBuf is never written again, so id may point into it.
func (e *entry) setID(id string) {
	if len(id) > len(e.idBuf) {
		e.idLen, e.id = longID, strings.Clone(id)
		return
	}
	e.idLen = uint8(copy(e.idBuf[:], id))
	if e.idLen > 0 {
		e.id = unsafe.String(&e.idBuf[0], e.idLen)
	}
}

// ownID returns the ID of e in a string of its own, for what may keep it
// after e is evicted (a meter keeps the attribute sets it saw, a log
// handler may keep its records): e.id may point into the entry, and would
// keep all of it.
func (e *entry) ownID() string {
	if e.idLen == longID {
		return e.id
	}
	return strings.Clone(e.id)
}

// sandbox returns the sandbox of e, for the audit.
func (e *entry) sandbox() propagation.Sandbox {
	s := propagation.Sandbox{ID: e.ownID()}
	if e.who != nil {
		s.Actor, s.Origin = e.who[0], e.who[1]
	}
	return s
}

// policyFor returns the policy of budget b at generation gen, the one the
// last key resolved when it is the same.
func (g *Group) policyFor(b Budget, gen uint64) *policy {
	if p := g.pol.Load(); p != nil && p.budget == b && p.gen == gen {
		return p
	}
	p := &policy{budget: b, maxInFlight: int64(b.MaxInFlight), gen: gen, limited: b.limited()}
	if p.limited {
		p.refill = int64(min(float64(b.burst())/b.Rate*float64(time.Second), math.MaxInt64/2))
	}
	g.pol.Store(p)
	return p
}

// fill sets lim to p's rate limit with a full bucket. The bucket is held
// by value in its entry (rate.NewLimiter returns a pointer, and a Limiter
// holds a mutex that must not be copied), so it is set through its
// methods: its last update moves to the zero time, so that by any time the
// group's clock reads it has refilled, up to its burst. (A bucket that
// would take longer than time.Duration's 292 years to fill, under one
// token per 292 years per token of burst, starts with what it would hold
// after them, not full: stricter, never looser.)
func (p *policy) fill(lim *rate.Limiter) {
	var long time.Time
	lim.SetLimitAt(long, rate.Limit(p.budget.Rate))
	lim.SetBurstAt(long, p.budget.burst())
}

// wait is the time until rl's bucket holds a token again.
func wait(rl *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - rl.TokensAt(now)
	if missing <= 0 {
		return time.Nanosecond
	}
	return time.Duration(math.Ceil(missing / float64(rl.Limit()) * float64(time.Second)))
}

func (e *entry) newPhase(s State, openUntil int64) *phase {
	p := &phase{state: s, openUntil: openUntil}
	p.done = func(err error) { e.finish(p, err) }
	return p
}

// policy returns the key's policy, resolved again after the route table
// changed.
func (e *entry) policy(g *Group, now time.Time) *policy {
	pol := e.pol.Load()
	if g.cfg.routes == nil {
		return pol
	}
	gen := g.routesGen()
	if pol.gen >= gen {
		return pol
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if pol = e.pol.Load(); pol.gen >= gen {
		return pol
	}
	np := g.policyFor(g.budgetFor(e), gen)
	if np.budget != pol.budget {
		switch {
		case !np.limited:
			// The bucket goes unused.
		case pol.limited:
			// Keep the tokens the key has.
			e.lim.SetLimitAt(now, rate.Limit(np.budget.Rate))
			e.lim.SetBurstAt(now, np.budget.burst())
		default:
			np.fill(&e.lim) // new to a rate limit: a full bucket
		}
	}
	e.pol.Store(np)
	return np
}

// allow admits or refuses one call of g, e's group, at time now (t on the
// group's scale). again reports that e was evicted, or was being
// compacted, meanwhile and the key must be looked up again.
func (e *entry) allow(g *Group, ctx context.Context, now time.Time, t int64) (done func(error), err error, again bool) {
	if t-e.lastUsed.Load() >= g.touch {
		e.lastUsed.Store(t)
	}
	p := e.phase()
	probe := false
	if p.st() != StateClosed {
		if p.state == StateOpen && t < p.openUntil {
			return nothing, e.refuse(ctx, refusedOpen, time.Duration(p.openUntil-t)), false
		}
		if p, probe, err = e.admitProbe(ctx, t); err != nil {
			return nothing, err, false
		}
	}
	n := int64(e.inflight.Add(1))
	if e.is(dead) {
		e.unadmit(p, probe)
		return nil, nil, true
	}
	// From here on the key counts as in flight: the sweep neither evicts
	// nor compacts it.
	pol := e.policy(g, now)
	if pol.maxInFlight > 0 && n > pol.maxInFlight {
		e.unadmit(p, probe)
		return nothing, e.refuse(ctx, refusedFlight, BusyRetryAfter), false
	}
	if pol.limited && !e.lim.AllowN(now, 1) {
		e.unadmit(p, probe)
		return nothing, e.refuse(ctx, refusedRate, wait(&e.lim, now)), false
	}
	e.count(g, ctx, admitted)
	if p == nil {
		return e.done0, nil, false
	}
	return p.done, nil, false
}

func (e *entry) unadmit(p *phase, probe bool) {
	e.inflight.Add(-1)
	if probe {
		e.mu.Lock()
		if e.cur.Load() == p && e.slow.probes > 0 {
			e.slow.probes--
		}
		e.mu.Unlock()
	}
}

// admitProbe handles a call to a breaker that is not closed: it turns an
// open breaker whose time is up half-open, and takes a probe slot. It
// returns the phase the call is admitted in, and whether it holds a probe
// slot (it does not when the breaker closed meanwhile).
func (e *entry) admitProbe(ctx context.Context, t int64) (*phase, bool, error) {
	e.mu.Lock()
	p := e.cur.Load()
	switch {
	case p.st() == StateClosed:
		e.mu.Unlock()
		return p, false, nil
	case p.state == StateOpen && t < p.openUntil:
		e.mu.Unlock()
		return nil, false, e.refuse(ctx, refusedOpen, time.Duration(p.openUntil-t))
	case p.state == StateOpen:
		p = e.setPhase(StateHalfOpen, 0, "open timeout over, probing")
	}
	s := e.slow // not closed: the breaker has counted results
	ok := s.probes < e.g.cfg.Probes
	if ok {
		s.probes++
	}
	changes := e.takeChanges()
	e.mu.Unlock()
	e.g.report(ctx, e, changes)
	if !ok {
		return nil, false, e.refuse(ctx, refusedOpen, BusyRetryAfter)
	}
	return p, true, nil
}

// Outcomes as gobreaker sees them.
var (
	errFailure  = errors.New("breaker: failure")
	errExcluded = errors.New("breaker: excluded")
)

func succeeded() (struct{}, error) { return struct{}{}, nil }
func failed() (struct{}, error)    { return struct{}{}, errFailure }

// finish records the outcome of a call admitted in phase p (nil: the
// first). The call counts as in flight until its outcome is recorded:
// else the sweep could evict the key in between (a call may outlive
// IdleTimeout), and a failure would open the breaker of an entry no
// longer in the group, leaving the key's next call a fresh, closed one.
func (e *entry) finish(p *phase, err error) {
	r := success
	if err != nil {
		r = e.classify(err)
	}
	if p.st() == StateClosed && e.phase() == p && (r == excluded || r == success && !e.is(dirty)) {
		// Fast path: in the closed state a success after a success, and
		// an excluded call, change nothing gobreaker decides on.
		e.inflight.Add(-1)
		return
	}
	e.mu.Lock()
	if e.cur.Load() != p {
		e.mu.Unlock()
		e.inflight.Add(-1)
		return // the breaker changed state since the call was admitted
	}
	if p.st() == StateHalfOpen && e.slow.probes > 0 {
		e.slow.probes--
	}
	if r == excluded {
		// A cancelled probe frees its slot and counts for nothing.
		e.mu.Unlock()
		e.inflight.Add(-1)
		return
	}
	s := e.slow
	if s == nil {
		st := e.g.cb
		st.Name = e.id
		st.OnStateChange = e.onStateChange
		s = &slow{cb: gobreaker.NewCircuitBreaker[struct{}](st)}
		e.slow = s
	}
	s.now = e.g.since(e.g.cfg.now())
	if r == failure {
		e.set(dirty, true)
		_, _ = s.cb.Execute(failed)
		// A counted failure is a use of the key: a call that outlived
		// IdleTimeout must not leave its failure to a key the sweep
		// takes as idle (by its start) and evicts with its count, or
		// a sandbox whose calls are all that long never trips.
		if s.now > e.lastUsed.Load() {
			e.lastUsed.Store(s.now)
		}
	} else {
		e.set(dirty, false)
		_, _ = s.cb.Execute(succeeded)
	}
	changes := e.takeChanges()
	e.mu.Unlock()
	e.inflight.Add(-1)
	e.g.report(context.Background(), e, changes)
}

// classify classifies the outcome err of a call of e. When the caller's
// IsFailure panics, the call stops counting as in flight (the panic goes
// on): its done was called, and must not hold a slot of MaxInFlight, nor
// keep the key from eviction, for good.
func (e *entry) classify(err error) result {
	ok := false
	defer func() {
		if !ok {
			e.inflight.Add(-1)
		}
	}()
	r := e.g.classify(err)
	ok = true
	return r
}

// onStateChange follows gobreaker's decisions; e.mu is held.
func (e *entry) onStateChange(_ string, _, to gobreaker.State) {
	switch to {
	case gobreaker.StateOpen:
		reason := fmt.Sprintf("%d consecutive failures", e.g.cfg.Failures)
		if e.cur.Load().st() == StateHalfOpen {
			reason = "a probe failed"
		}
		e.setPhase(StateOpen, e.slow.now+int64(e.g.cfg.OpenTimeout), reason)
	case gobreaker.StateClosed:
		e.setPhase(StateClosed, 0, fmt.Sprintf("%d probes in a row succeeded", e.g.cfg.Probes))
	}
	// gobreaker's own step from open to half-open is not followed: the
	// group took it when the open period of its clock ran out.
}

// setPhase moves the breaker to state s; e.mu is held, and e.slow is set
// (only a breaker that counted results changes state).
func (e *entry) setPhase(s State, openUntil int64, reason string) *phase {
	old := e.cur.Load()
	p := e.newPhase(s, openUntil)
	e.cur.Store(p)
	e.set(phased, true)
	e.slow.probes = 0
	e.set(dirty, false)
	e.slow.changes = append(e.slow.changes, change{from: old.st(), to: s, reason: reason})
	return p
}

func (e *entry) takeChanges() []change {
	if e.slow == nil {
		return nil
	}
	c := e.slow.changes
	e.slow.changes = nil
	return c
}

// report audits state changes and updates the open-breakers metric.
func (g *Group) report(ctx context.Context, e *entry, changes []change) {
	for _, c := range changes {
		switch {
		case c.from == StateClosed && c.to != StateClosed:
			g.ins.open.Add(ctx, 1, g.ins.openOpts...)
		case c.from != StateClosed && c.to == StateClosed:
			g.ins.open.Add(ctx, -1, g.ins.openOpts...)
		}
		d := audit.Throttled
		if c.to == StateClosed {
			d = audit.Admitted
		}
		audit.Emit(ctx, g.cfg.logger, audit.Event{
			Decision: d,
			Sandbox:  e.sandbox(),
			Target:   g.cfg.Name,
			Reason:   "circuit breaker " + c.from.String() + " -> " + c.to.String() + ": " + c.reason,
		})
	}
}

// idle reports whether e may be evicted at t (its calls in flight are
// checked by the sweeper). A key whose token bucket may not have refilled
// is not: it would come back with a full one, and a pause longer than
// IdleTimeout would undo its throttling. Its last token was taken before
// lastUsed+touch, so the bucket is full once refill has passed since
// then (no lock of the bucket taken: the sweep looks at many keys).
func (e *entry) idle(t int64) bool {
	since := t - e.lastUsed.Load()
	if since < int64(e.g.cfg.IdleTimeout) {
		return false
	}
	if p := e.cur.Load(); p.st() == StateOpen && t < p.openUntil {
		return false
	}
	pol := e.pol.Load()
	return !pol.limited || since >= pol.refill+e.g.touch
}

func (e *entry) refuse(ctx context.Context, o outcome, retry time.Duration) error {
	e.count(e.g, ctx, o)
	err := ErrOpen
	switch o {
	case refusedRate:
		err = ErrThrottled
	case refusedFlight:
		err = ErrTooManyInFlight
	}
	// The ID in a buffer of the error's own allocation, not e.id (which
	// would keep the whole entry for as long as the caller keeps the
	// error, long after the key was evicted), nor ownID (a second
	// allocation).
	if e.idLen == longID {
		return &Error{Err: err, ID: e.id, RetryAfter: retry}
	}
	r := &refusal{Error: Error{Err: err, RetryAfter: retry}}
	if e.idLen > 0 {
		copy(r.idBuf[:], e.idBuf[:e.idLen])
		r.ID = unsafe.String(&r.idBuf[0], e.idLen)
	}
	return &r.Error
}

// refusal is an Error with room for a short ID, so that the ID it carries
// keeps nothing alive but the error itself.
type refusal struct {
	Error
	idBuf [15]byte
}

// count counts outcome o of a call of e's group g.
func (e *entry) count(g *Group, ctx context.Context, o outcome) {
	if !g.ins.decisions.Enabled(ctx) {
		// Nothing records it (the noop meter, or no reader wants it): do
		// not build, nor keep, the key's attribute set (about 190 B).
		return
	}
	all := e.opts.Load()
	if all == nil {
		all = new([numOutcomes]atomic.Pointer[[]metric.AddOption])
		if !e.opts.CompareAndSwap(nil, all) {
			all = e.opts.Load()
		}
	}
	opts := all[o].Load()
	if opts == nil {
		a := attrs(g.cfg.Name, e.ownID(), o)
		opts = &a
		all[o].Store(opts)
	}
	g.ins.decisions.Add(ctx, 1, (*opts)...)
}

// compact lets go of what an idle key (no call for compactAfter) holds and
// a fresh key in its state would not: the breaker's gobreaker when it is
// closed with no failure counted (a new one, closed with zero counts,
// decides the same: only consecutive failures open it) and the metric
// attribute sets (made again when needed). The token bucket is part of the
// entry and stays as it is. A key with a call in flight, or whose breaker
// is open or half-open or has counted a failure, keeps everything. sh.mu
// is held; a call that finds the key meanwhile sees dead and looks it up
// again, after the shard lock is released.
func (e *entry) compact(t int64) {
	if t-e.lastUsed.Load() < e.g.compactAfter || !e.mu.TryLock() {
		return
	}
	defer e.mu.Unlock()
	if e.slow == nil && e.opts.Load() == nil {
		return // compact already
	}
	if e.cur.Load().st() != StateClosed || e.is(dirty) {
		return
	}
	e.set(dead, true)
	defer e.set(dead, false)
	if e.inflight.Load() != 0 {
		return
	}
	e.slow = nil
	e.opts.Store(nil)
}
