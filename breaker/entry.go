package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

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
type entry struct {
	g  *Group
	sb propagation.Sandbox

	cur      atomic.Pointer[phase]
	lim      atomic.Pointer[limits]
	inflight atomic.Int64
	lastUsed atomic.Int64
	idx      int         // index in its shard's keys; set under the shard lock
	dead     atomic.Bool // evicted; set and cleared under the shard lock
	dirty    atomic.Bool // gobreaker may count consecutive failures
	opts     [numOutcomes]atomic.Pointer[[]metric.AddOption]

	mu      sync.Mutex // serialises every call into cb and phase changes
	cb      *gobreaker.CircuitBreaker[struct{}]
	probes  uint32   // probes in flight in the half-open phase
	now     int64    // the group's clock while cb runs, for onStateChange
	changes []change // state changes not yet reported
}

type phase struct {
	e         *entry
	state     State
	openUntil int64 // StateOpen: end of the open period
	done      func(error)
}

func (p *phase) finish(err error) { p.e.finish(p, err) }

type limits struct {
	budget      Budget
	lim         *rate.Limiter // nil: no rate limit
	maxInFlight int64         // 0: no cap
	gen         uint64        // route table generation it was resolved at
}

type change struct {
	from, to State
	reason   string
}

func (g *Group) newEntry(s propagation.Sandbox, t int64, now time.Time) *entry {
	e := &entry{g: g, sb: newEntryID(s)}
	e.lastUsed.Store(t)
	gen := g.routesGen()
	e.lim.Store(newLimits(g.budgetFor(e.sb.ID), gen, nil, now))
	e.cur.Store(e.newPhase(StateClosed, 0))
	return e
}

func newLimits(b Budget, gen uint64, old *limits, now time.Time) *limits {
	l := &limits{budget: b, maxInFlight: int64(b.MaxInFlight), gen: gen}
	if !b.limited() {
		return l
	}
	if old != nil && old.lim != nil {
		// Keep the tokens the key has.
		old.lim.SetLimitAt(now, rate.Limit(b.Rate))
		old.lim.SetBurstAt(now, b.burst())
		l.lim = old.lim
		return l
	}
	l.lim = rate.NewLimiter(rate.Limit(b.Rate), b.burst())
	return l
}

// wait is the time until l's bucket holds a token again.
func (l *limits) wait(now time.Time) time.Duration {
	missing := 1 - l.lim.TokensAt(now)
	if missing <= 0 {
		return time.Nanosecond
	}
	return time.Duration(math.Ceil(missing / l.budget.Rate * float64(time.Second)))
}

func (e *entry) newPhase(s State, openUntil int64) *phase {
	p := &phase{e: e, state: s, openUntil: openUntil}
	p.done = p.finish
	return p
}

// limits returns the key's limits, resolved again after the route table
// changed.
func (e *entry) limits(now time.Time) *limits {
	l := e.lim.Load()
	if e.g.cfg.routes == nil {
		return l
	}
	gen := e.g.routesGen()
	if l.gen >= gen {
		return l
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if l = e.lim.Load(); l.gen >= gen {
		return l
	}
	b := e.g.budgetFor(e.sb.ID)
	if b == l.budget {
		nl := *l
		nl.gen = gen
		e.lim.Store(&nl)
		return &nl
	}
	nl := newLimits(b, gen, l, now)
	e.lim.Store(nl)
	return nl
}

// allow admits or refuses one call at time now (t on the group's scale).
// again reports that e was evicted meanwhile and the key must be looked up
// again.
func (e *entry) allow(ctx context.Context, now time.Time, t int64) (done func(error), err error, again bool) {
	if t-e.lastUsed.Load() >= e.g.touch {
		e.lastUsed.Store(t)
	}
	l := e.limits(now)
	p := e.cur.Load()
	probe := false
	if p.state != StateClosed {
		if p.state == StateOpen && t < p.openUntil {
			return nothing, e.refuse(ctx, refusedOpen, time.Duration(p.openUntil-t)), false
		}
		if p, probe, err = e.admitProbe(ctx, t); err != nil {
			return nothing, err, false
		}
	}
	n := e.inflight.Add(1)
	if e.dead.Load() {
		e.unadmit(p, probe)
		return nil, nil, true
	}
	if l.maxInFlight > 0 && n > l.maxInFlight {
		e.unadmit(p, probe)
		return nothing, e.refuse(ctx, refusedFlight, BusyRetryAfter), false
	}
	if l.lim != nil && !l.lim.AllowN(now, 1) {
		e.unadmit(p, probe)
		return nothing, e.refuse(ctx, refusedRate, l.wait(now)), false
	}
	e.count(ctx, admitted)
	return p.done, nil, false
}

func (e *entry) unadmit(p *phase, probe bool) {
	e.inflight.Add(-1)
	if probe {
		e.mu.Lock()
		if e.cur.Load() == p && e.probes > 0 {
			e.probes--
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
	case p.state == StateClosed:
		e.mu.Unlock()
		return p, false, nil
	case p.state == StateOpen && t < p.openUntil:
		e.mu.Unlock()
		return nil, false, e.refuse(ctx, refusedOpen, time.Duration(p.openUntil-t))
	case p.state == StateOpen:
		p = e.setPhase(StateHalfOpen, 0, "open timeout over, probing")
	}
	ok := e.probes < e.g.cfg.Probes
	if ok {
		e.probes++
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

// finish records the outcome of a call admitted in phase p.
func (e *entry) finish(p *phase, err error) {
	e.inflight.Add(-1)
	r := e.g.classify(err)
	if p.state == StateClosed && e.cur.Load() == p && (r == excluded || r == success && !e.dirty.Load()) {
		// Fast path: in the closed state a success after a success, and
		// an excluded call, change nothing gobreaker decides on.
		return
	}
	e.mu.Lock()
	if e.cur.Load() != p {
		e.mu.Unlock()
		return // the breaker changed state since the call was admitted
	}
	if p.state == StateHalfOpen && e.probes > 0 {
		e.probes--
	}
	if r == excluded {
		// A cancelled probe frees its slot and counts for nothing.
		e.mu.Unlock()
		return
	}
	if e.cb == nil {
		st := e.g.cb
		st.Name = e.sb.ID
		st.OnStateChange = e.onStateChange
		e.cb = gobreaker.NewCircuitBreaker[struct{}](st)
	}
	e.now = e.g.since(e.g.cfg.now())
	if r == failure {
		e.dirty.Store(true)
		_, _ = e.cb.Execute(failed)
	} else {
		e.dirty.Store(false)
		_, _ = e.cb.Execute(succeeded)
	}
	changes := e.takeChanges()
	e.mu.Unlock()
	e.g.report(context.Background(), e, changes)
}

// onStateChange follows gobreaker's decisions; e.mu is held.
func (e *entry) onStateChange(_ string, _, to gobreaker.State) {
	switch to {
	case gobreaker.StateOpen:
		reason := fmt.Sprintf("%d consecutive failures", e.g.cfg.Failures)
		if e.cur.Load().state == StateHalfOpen {
			reason = "a probe failed"
		}
		e.setPhase(StateOpen, e.now+int64(e.g.cfg.OpenTimeout), reason)
	case gobreaker.StateClosed:
		e.setPhase(StateClosed, 0, fmt.Sprintf("%d probes in a row succeeded", e.g.cfg.Probes))
	}
	// gobreaker's own step from open to half-open is not followed: the
	// group took it when the open period of its clock ran out.
}

// setPhase moves the breaker to state s; e.mu is held.
func (e *entry) setPhase(s State, openUntil int64, reason string) *phase {
	old := e.cur.Load()
	p := e.newPhase(s, openUntil)
	e.cur.Store(p)
	e.probes = 0
	e.dirty.Store(false)
	e.changes = append(e.changes, change{from: old.state, to: s, reason: reason})
	return p
}

func (e *entry) takeChanges() []change {
	c := e.changes
	e.changes = nil
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
			Sandbox:  e.sb,
			Target:   g.cfg.Name,
			Reason:   "circuit breaker " + c.from.String() + " -> " + c.to.String() + ": " + c.reason,
		})
	}
}

// idle reports whether e may be evicted at t (its calls in flight are
// checked by the sweeper).
func (e *entry) idle(t int64) bool {
	if t-e.lastUsed.Load() < int64(e.g.cfg.IdleTimeout) {
		return false
	}
	p := e.cur.Load()
	return p.state != StateOpen || t >= p.openUntil
}

func (e *entry) refuse(ctx context.Context, o outcome, retry time.Duration) error {
	e.count(ctx, o)
	err := ErrOpen
	switch o {
	case refusedRate:
		err = ErrThrottled
	case refusedFlight:
		err = ErrTooManyInFlight
	}
	return &Error{Err: err, ID: e.sb.ID, RetryAfter: retry}
}

func (e *entry) count(ctx context.Context, o outcome) {
	if !e.g.ins.decisions.Enabled(ctx) {
		// Nothing records it (the noop meter, or no reader wants it): do
		// not build, nor keep, the key's attribute set (about 190 B).
		return
	}
	opts := e.opts[o].Load()
	if opts == nil {
		a := attrs(e.g.cfg.Name, e.sb.ID, o)
		opts = &a
		e.opts[o].Store(opts)
	}
	e.g.ins.decisions.Add(ctx, 1, (*opts)...)
}
