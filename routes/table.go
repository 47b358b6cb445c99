package routes

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
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

	seed uint32 // spreads sandboxes over the shards of a snapshot

	mu    sync.Mutex // serialises updates
	snap  atomic.Pointer[snapshot]
	tombs map[routeKey]time.Time // the tombstones in snap, with their RemovedAt; under mu
	err   atomic.Pointer[errBox]
	// applied is the document of a built-in source the content comes
	// from, nil after an update from anything else.
	applied atomic.Pointer[parsedDoc]

	// state says where the content comes from: nowhere yet (fresh), by
	// hand (Update only) or a source (Load or Sync, for good).
	state atomic.Int32
	// synced is the start of the last good load, in Unix nanoseconds, or
	// neverSynced. Only markSynced advances it, under syncMu, and closes
	// syncSig when it does.
	synced  atomic.Int64
	syncMu  sync.Mutex
	syncSig atomic.Pointer[chan struct{}]
	// failingSince is the start of the first failed load after the last
	// good one, neverSynced while the source answers. Under syncMu.
	failingSince int64
}

// neverSynced is synced before the first good load.
const neverSynced = math.MinInt64

// The states of a table.
const (
	fresh   = iota // never filled: synced up to nothing
	byHand         // filled by Update only: its own source, synced up to now
	sourced        // given a source: synced up to its last good load
)

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

// New returns an empty table.
func New(opts ...Option) *Table {
	t := &Table{now: time.Now, grace: DefaultTombstoneGrace}
	for _, o := range opts {
		o.apply(t)
	}
	t.seed = 2166136261 ^ rand.Uint32()
	t.tombs = map[routeKey]time.Time{}
	t.snap.Store(&snapshot{changed: make(chan struct{})})
	t.synced.Store(neverSynced)
	t.failingSince = neverSynced
	sig := make(chan struct{})
	t.syncSig.Store(&sig)
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
	e := t.snap.Load().route(t.seed, id, service)
	if e == nil || e.Upstream == "" || !e.live(t.now()) {
		return "", false
	}
	return e.Upstream, true
}

// Route returns the route of service in sandbox id, removed ones included
// while their tombstone lasts. A route of an expired sandbox has RemovedAt
// no later than the expiry.
func (t *Table) Route(id, service string) (Route, bool) {
	e := t.snap.Load().route(t.seed, id, service)
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
	e := t.snap.Load().route(t.seed, id, service)
	return e != nil && e.live(at)
}

// Sandbox returns the sandbox id as the table holds it, if it exists and has
// not expired. The returned value shares its Services map and Budget with
// the table: do not modify them.
func (t *Table) Sandbox(id string) (Sandbox, bool) {
	rec := t.snap.Load().sandbox(t.seed, id)
	if rec == nil || (!rec.sb.Expires.IsZero() && !t.now().Before(rec.sb.Expires)) {
		return Sandbox{}, false
	}
	return rec.sb, true
}

// Sandboxes returns the sandboxes that exist now, sorted by ID.
func (t *Table) Sandboxes() []Sandbox {
	snap := t.snap.Load()
	now := t.now()
	out := make([]Sandbox, 0, snap.count)
	for _, sh := range snap.shards {
		if sh == nil {
			continue
		}
		for _, rec := range sh.sandboxes {
			if rec.sb.Expires.IsZero() || now.Before(rec.sb.Expires) {
				out = append(out, rec.sb)
			}
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
// source: the start of the last fetch that succeeded. It never runs ahead of
// what the source proved: before the first good load it is the zero time,
// and while the source fails it stays at the last good load, whether or not
// [Table.Sync] still runs.
//
// A table filled only by hand ([NewStatic], [Table.Update]) and never given
// a source ([Table.Load], [Table.Sync]) is its own source: its SyncedAt is
// now. A table from [New] that has been neither filled nor given a source
// is synced up to nothing (the zero time), so a reader started beside
// `go table.Sync(...)` waits for the first load. Once a table has been
// given a source it keeps these source semantics for good; a later
// [Table.Update] by hand changes its content but not its SyncedAt.
func (t *Table) SyncedAt() time.Time {
	switch t.state.Load() {
	case byHand:
		return t.now()
	case fresh:
		return time.Time{}
	}
	ns := t.synced.Load()
	if ns == neverSynced {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// SyncedUpTo reports whether the table has synced up to at: whether at is
// not after [Table.SyncedAt]. A reader asks it of every tagged message;
// for a table with a source it compares at with the start of the last
// good load in nanoseconds, without building SyncedAt's time.Time.
func (t *Table) SyncedUpTo(at time.Time) bool {
	if t.state.Load() == sourced {
		if ns := t.synced.Load(); ns != neverSynced {
			if sec := at.Unix(); sec >= minNanoSec && sec <= maxNanoSec {
				return sec*1e9+int64(at.Nanosecond()) <= ns // at.UnixNano(), without its second pass over sec
			}
		}
	}
	return !at.After(t.SyncedAt())
}

// The seconds of the times whose UnixNano is exact (1678 to 2262), with a
// second to spare at each end; SyncedUpTo compares other times with
// SyncedAt.
const (
	minNanoSec = math.MinInt64/1_000_000_000 + 1
	maxNanoSec = math.MaxInt64/1_000_000_000 - 1
)

// WaitSynced waits until the table has synced up to at ([Table.SyncedAt]
// is at or after it), and returns nil then, or ctx's error if ctx ends
// first. It returns nil at once when the table is already synced up to at,
// even if ctx has ended.
//
// A table with a source (or none yet) is woken by each good load (or its
// first fill), without polling. A table filled by hand is synced up to
// now, so WaitSynced waits for its clock to reach at, re-reading it after the wall-clock time between now and
// at has passed (an injected clock that moves slower than that is re-read
// as often).
func (t *Table) WaitSynced(ctx context.Context, at time.Time) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// Take the signal before reading SyncedAt: an advance after the
		// read closes this very channel.
		sig := *t.syncSig.Load()
		synced := t.SyncedAt()
		if !synced.Before(at) {
			return nil
		}
		var tick <-chan time.Time
		if t.state.Load() == byHand {
			d := at.Sub(synced)
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sig:
		case <-tick:
		}
	}
}

// MarkSynced records that the table reflects its source up to at. It is
// for a source that pushes its changes with [Table.Put] and [Table.Remove]
// instead of being fetched by [Table.Load] or [Table.Sync] (an etcd watch,
// as routes/etcdroutes keeps): such a source calls it once it has proved
// that every change made to it before at has been applied. MarkSynced
// gives the table a source for good (see [Table.SyncedAt]), moves
// SyncedAt forward to at (never back), wakes [Table.WaitSynced] and clears
// [Table.Err], unless a failure recorded by [Table.MarkFailed] started
// after at: a proof that began before the source failed says nothing of
// the failure, so the error stays until a later proof.
func (t *Table) MarkSynced(at time.Time) {
	t.setSourced()
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	t.markSyncedLocked(at, true)
}

// MarkFailed records that a source that pushes its changes (see
// [Table.MarkSynced]) failed in an attempt that started at start: the
// table keeps its content and its SyncedAt, and [Table.Err] reports err
// with since when the source has been failing and when it last proved
// itself, as after a failed [Table.Load]. It returns that error.
func (t *Table) MarkFailed(start time.Time, err error) error {
	t.setSourced()
	return t.failed(start, err)
}

// markSynced records a good load that started at at, and wakes the
// WaitSynced callers when it moves SyncedAt forward.
func (t *Table) markSynced(at time.Time) {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	t.markSyncedLocked(at, false)
}

// markSyncedLocked is markSynced with syncMu held. When the load is at
// least as recent as the current failure, if any (the source may be
// called healthy again), it ends the failure, and with clearErr clears
// Err, before it wakes the WaitSynced callers: one that waited for the
// table to be synced never reads the failure the proof healed.
func (t *Table) markSyncedLocked(at time.Time, clearErr bool) {
	ns := nanos(at)
	if ns >= t.failingSince {
		t.failingSince = neverSynced
		if clearErr {
			t.setErr(nil)
		}
	}
	if ns > t.synced.Load() {
		t.synced.Store(ns)
		t.wakeWaiters()
	}
}

// nanos is at.UnixNano() held to the range it is exact in: UnixNano of a
// time before 1678 or after 2262 wraps, and a proof dated 1600 read as
// synced up to 2184. Earlier times are one nanosecond after neverSynced
// (synced up to nothing a reader asks about), later ones the last
// nanosecond.
func nanos(at time.Time) int64 {
	switch sec := at.Unix(); {
	case sec < minNanoSec:
		return neverSynced + 1
	case sec > maxNanoSec:
		return math.MaxInt64
	}
	return at.UnixNano()
}

// failed records a load that started at start and failed with err, and
// returns err with since when the source has been failing and when it last
// answered.
func (t *Table) failed(start time.Time, err error) error {
	t.syncMu.Lock()
	if t.failingSince == neverSynced && nanos(start) >= t.synced.Load() {
		t.failingSince = nanos(start)
	}
	defer t.syncMu.Unlock()
	since, last := t.failingSince, t.synced.Load()
	if since == neverSynced { // an older load, overtaken by a good one
		since = nanos(start)
	}
	good := "none yet"
	if last != neverSynced {
		good = time.Unix(0, last).UTC().Format(time.RFC3339Nano)
	}
	err = fmt.Errorf("%w (source failing since %s; last good load: %s)", err, time.Unix(0, since).UTC().Format(time.RFC3339Nano), good)
	t.setErr(err)
	return err
}

// wakeWaiters wakes the WaitSynced callers. The caller holds syncMu.
func (t *Table) wakeWaiters() {
	sig := make(chan struct{})
	close(*t.syncSig.Swap(&sig))
}

// setSourced gives the table a source, for good.
func (t *Table) setSourced() { t.state.Store(sourced) }

// setByHand records a fill by hand; it makes a fresh table its own source.
func (t *Table) setByHand() {
	if t.state.Load() != fresh {
		return
	}
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	if t.state.CompareAndSwap(fresh, byHand) {
		t.wakeWaiters()
	}
}

// Err returns the error of the last failed load or update, or nil when the
// last one succeeded. The error of a failed load says since when the source
// has been failing and when the last good load was ("source failing since
// …; last good load …"); a fetch that hangs is such a failure once its
// deadline passes (see [FetchTimeout]).
func (t *Table) Err() error {
	if b := t.err.Load(); b != nil {
		return b.err
	}
	return nil
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
