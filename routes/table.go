package routes

import (
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTombstoneGrace is how long a removed route is remembered.
const DefaultTombstoneGrace = time.Hour

// Option configures a [Table].
type Option interface{ apply(*Table) }

type optionFunc func(*Table)

func (f optionFunc) apply(t *Table) { f(t) }

// WithClock sets the table's clock (default time.Now), for tests.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(t *Table) { t.now = now })
}

// WithTombstoneGrace sets how long a removed route is kept as a tombstone
// (default [DefaultTombstoneGrace]). Kafka consumers that lag by more than
// this cannot tell who owned a message of that route.
func WithTombstoneGrace(d time.Duration) Option {
	return optionFunc(func(t *Table) { t.grace = d })
}

// Table is the route table. It is safe for concurrent use: reads go to an
// immutable snapshot that each update replaces.
type Table struct {
	now   func() time.Time
	grace time.Duration

	mu      sync.Mutex // serialises updates
	snap    atomic.Pointer[snapshot]
	last    []Sandbox // the last input applied, to detect no-op updates
	synced  atomic.Int64
	syncing atomic.Int32
	err     atomic.Pointer[errBox]
}

type errBox struct{ err error }

type routeKey struct{ id, service string }

type entry struct {
	Route
	expires time.Time
}

// live reports whether the route serves traffic at time at.
func (e *entry) live(at time.Time) bool {
	if at.Before(e.ActiveFrom) {
		return false
	}
	if !e.RemovedAt.IsZero() && !at.Before(e.RemovedAt) {
		return false
	}
	return e.expires.IsZero() || at.Before(e.expires)
}

type snapshot struct {
	sandboxes map[string]*Sandbox
	routes    map[routeKey]*entry
	changed   chan struct{} // closed when this snapshot is replaced
}

// New returns an empty table.
func New(opts ...Option) *Table {
	t := &Table{now: time.Now, grace: DefaultTombstoneGrace}
	for _, o := range opts {
		o.apply(t)
	}
	t.snap.Store(&snapshot{
		sandboxes: map[string]*Sandbox{},
		routes:    map[routeKey]*entry{},
		changed:   make(chan struct{}),
	})
	t.synced.Store(t.now().UnixNano())
	return t
}

// NewStatic returns a table holding sbs, for routes built in code. It fails
// when an entry is invalid.
func NewStatic(sbs []Sandbox, opts ...Option) (*Table, error) {
	t := New(opts...)
	if err := t.Update(sbs); err != nil {
		return nil, err
	}
	return t, nil
}

// Lookup returns the upstream that serves service for the sandbox id now,
// and false when the sandbox does not override service (or does not exist,
// or has expired, or overrides only the service's consumers). It does not
// allocate.
func (t *Table) Lookup(id, service string) (upstream string, ok bool) {
	e := t.snap.Load().routes[routeKey{id, service}]
	if e == nil || e.Upstream == "" || !e.live(t.now()) {
		return "", false
	}
	return e.Upstream, true
}

// Route returns the route of service in sandbox id, removed ones included
// while their tombstone lasts. A route of an expired sandbox has RemovedAt
// no later than the expiry.
func (t *Table) Route(id, service string) (Route, bool) {
	e := t.snap.Load().routes[routeKey{id, service}]
	if e == nil {
		return Route{}, false
	}
	r := e.Route
	if !e.expires.IsZero() && (r.RemovedAt.IsZero() || e.expires.Before(r.RemovedAt)) {
		r.RemovedAt = e.expires
	}
	return r, true
}

// ActiveAt reports whether sandbox id overrides service at time at: the
// decision Kafka consumers make from a message's timestamp. Two processes
// reach the same answer whenever each of them loaded the document only when
// the document gives the route's activeFrom (and removedAt, to remove it):
// times this table fills in itself are its own moments of noticing (see
// the package documentation). The answer is only trustworthy for times up
// to [Table.SyncedAt].
func (t *Table) ActiveAt(id, service string, at time.Time) bool {
	e := t.snap.Load().routes[routeKey{id, service}]
	return e != nil && e.live(at)
}

// Sandbox returns the sandbox id as the table holds it, if it exists and has
// not expired. The returned value shares its Services map and Budget with
// the table: do not modify them.
func (t *Table) Sandbox(id string) (Sandbox, bool) {
	sb := t.snap.Load().sandboxes[id]
	if sb == nil || (!sb.Expires.IsZero() && !t.now().Before(sb.Expires)) {
		return Sandbox{}, false
	}
	return *sb, true
}

// Sandboxes returns the sandboxes that exist now, sorted by ID.
func (t *Table) Sandboxes() []Sandbox {
	snap := t.snap.Load()
	now := t.now()
	out := make([]Sandbox, 0, len(snap.sandboxes))
	for _, sb := range snap.sandboxes {
		if sb.Expires.IsZero() || now.Before(sb.Expires) {
			out = append(out, *sb)
		}
	}
	slices.SortFunc(out, func(a, b Sandbox) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Changed returns a channel that is closed at the next change of the
// table's content.
func (t *Table) Changed() <-chan struct{} { return t.snap.Load().changed }

// SyncedAt returns the time up to which the table is known to reflect its
// source: the start of the last successful fetch while [Table.Sync] runs,
// and now for a table only updated by hand (it is its own source).
func (t *Table) SyncedAt() time.Time {
	if t.syncing.Load() == 0 {
		return t.now()
	}
	return time.Unix(0, t.synced.Load())
}

// Err returns the error of the last failed fetch or update, or nil when the
// last one succeeded.
func (t *Table) Err() error {
	if b := t.err.Load(); b != nil {
		return b.err
	}
	return nil
}

// Update replaces the table's content with sbs. It validates sbs first and
// rejects it whole, keeping the current content, when an entry is invalid.
// Routes without ActiveFrom keep the activation time they had, or get now;
// routes that disappear become tombstones removed now.
func (t *Table) Update(sbs []Sandbox) error {
	now := t.now()
	if err := t.update(sbs, now); err != nil {
		return err
	}
	t.markSynced(now)
	return nil
}

func (t *Table) update(sbs []Sandbox, now time.Time) error {
	if err := Validate(sbs); err != nil {
		t.setErr(err)
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setErr(nil)
	old := t.snap.Load()
	if t.last != nil && reflect.DeepEqual(t.last, sbs) && !t.tombstonesExpire(old, now) {
		return nil
	}
	next := &snapshot{
		sandboxes: make(map[string]*Sandbox, len(sbs)),
		routes:    make(map[routeKey]*entry),
		changed:   make(chan struct{}),
	}
	for i := range sbs {
		sb := sbs[i]
		sb.Services = maps.Clone(sb.Services)
		if sb.Budget != nil {
			b := *sb.Budget
			sb.Budget = &b
		}
		for svc, r := range sb.Services {
			k := routeKey{sb.ID, svc}
			prev := old.routes[k]
			if r.ActiveFrom.IsZero() {
				if prev != nil && prev.RemovedAt.IsZero() {
					r.ActiveFrom = prev.ActiveFrom
				} else {
					r.ActiveFrom = now
				}
			}
			sb.Services[svc] = r
			next.routes[k] = &entry{Route: r, expires: sb.Expires}
		}
		next.sandboxes[sb.ID] = &sb
	}
	// Routes that disappeared become tombstones; old tombstones are kept
	// for the grace period.
	for k, e := range old.routes {
		if _, ok := next.routes[k]; ok {
			continue
		}
		tomb := *e
		if tomb.RemovedAt.IsZero() {
			tomb.RemovedAt = now
		}
		if now.Sub(tomb.RemovedAt) < t.grace {
			next.routes[k] = &tomb
		}
	}
	t.last = cloneSandboxes(sbs)
	t.snap.Store(next)
	close(old.changed)
	return nil
}

func (t *Table) tombstonesExpire(s *snapshot, now time.Time) bool {
	for _, e := range s.routes {
		if !e.RemovedAt.IsZero() && now.Sub(e.RemovedAt) >= t.grace {
			return true
		}
	}
	return false
}

func (t *Table) setErr(err error) {
	if err == nil {
		if t.err.Load() != nil {
			t.err.Store(nil)
		}
		return
	}
	t.err.Store(&errBox{err})
}

// cloneSandboxes copies sbs deeply enough that later changes the caller makes
// to its maps and budgets do not reach the table.
func cloneSandboxes(sbs []Sandbox) []Sandbox {
	out := slices.Clone(sbs)
	for i := range out {
		out[i].Services = maps.Clone(out[i].Services)
		if out[i].Budget != nil {
			b := *out[i].Budget
			out[i].Budget = &b
		}
	}
	return out
}
