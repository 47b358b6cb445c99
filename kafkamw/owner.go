package kafkamw

import (
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// owner is who processes a tagged message.
type owner uint8

const (
	// ownerBaseline: the baseline reader, with the sandbox in the context
	// (the sandbox exists but does not override the service then).
	ownerBaseline owner = iota
	// ownerSandbox: the reader of the message's sandbox.
	ownerSandbox
	// ownerNone: no reader. The table does not know the sandbox at the
	// message's time: it never existed, had expired, or was removed.
	ownerNone
)

// orphan says why a message belongs to no one.
type orphan uint8

const (
	notOrphan orphan = iota
	// unknownSandbox: the table holds neither the sandbox nor a route of
	// it for the service (it never existed, or was removed or expired
	// and had no route for the service).
	unknownSandbox
	// expiredSandbox: the sandbox exists but expired at or before the
	// message's time.
	expiredSandbox
	// goneSandbox: the sandbox no longer exists (removed or expired) and
	// its route for the service, kept as a tombstone, was not active at
	// the message's time.
	goneSandbox
)

func (o orphan) String() string {
	switch o {
	case unknownSandbox:
		return "sandbox not in the route table (never existed, removed or expired)"
	case expiredSandbox:
		return "sandbox expired before the message's time"
	case goneSandbox:
		return "sandbox removed or expired, its route for the service not active at the message's time"
	}
	return ""
}

// ownerOf decides who owns a message of sandbox id with timestamp at, for
// the readers of service. It reads only the route table: every reader of
// the service (the baseline's, each sandbox's) reaches the same answer
// from the same document, and a restarted reader reaches the answer of
// one that never stopped. It is the one place the decision is made.
//
// In order:
//
//  1. the sandbox's route for the service is active at at (the window
//     of its document, tombstones of removed routes included): the
//     sandbox's reader;
//  2. the sandbox exists in the table and had not expired at at: the
//     baseline reader, with the sandbox in the context;
//  3. anything else: no one.
//
// The table keeps no record of a removed sandbox beyond its routes'
// tombstones, so a message of a sandbox that did not override the service
// and is gone by the time the message is decided belongs to no one, even
// if it was produced before the removal: processing it for a sandbox that
// no longer exists would fail anyway (its test database is gone).
func ownerOf(t *routes.Table, service, id string, at time.Time) (owner, orphan) {
	if t.ActiveAt(id, service, at) {
		return ownerSandbox, notOrphan
	}
	return inactiveOwner(t, service, id, at, func() bool {
		_, ok := t.Route(id, service)
		return ok
	})
}

// inactiveOwner is the end of [ownerOf], for a message outside every
// window of its sandbox's route: rules 2 and 3. hasRoute reports whether
// the sandbox has a route for the service (a tombstone included), asked
// only for a sandbox the table does not hold.
func inactiveOwner(t *routes.Table, service, id string, at time.Time, hasRoute func() bool) (owner, orphan) {
	sb, ok := t.Sandbox(id)
	switch {
	case ok && (sb.Expires.IsZero() || at.Before(sb.Expires)):
		return ownerBaseline, notOrphan
	case ok:
		return ownerNone, expiredSandbox
	case hasRoute():
		return ownerNone, goneSandbox
	}
	return ownerNone, unknownSandbox
}

// role is a reader's part: the baseline reader ("") or the reader of one
// sandbox (its ID).
type role string

func (ro role) baseline() bool { return ro == "" }

// concerns reports whether a message of sandbox id can be this reader's
// business: every tagged message is the baseline's (it owns or hands on
// what no sandbox reader takes), a sandbox reader's are only its own.
func (ro role) concerns(id string) bool { return ro == "" || string(ro) == id }

// untagged is the fate of a message without a sandbox: production, the
// baseline's.
func (ro role) untagged() fate {
	if ro.baseline() {
		return fateMine
	}
	return fateSkip
}

// fate is what a reader of role ro does with a message owned by who.
// With ownerOf it is the whole decision, a pure function of the table,
// the reader's role and the message, which both modes call.
func (ro role) fate(who owner) fate {
	switch {
	case who == ownerNone:
		return fateSkip
	case ro.baseline() && who == ownerSandbox:
		return fateSandbox
	case ro.baseline() == (who == ownerBaseline):
		return fateMine
	}
	return fateSkip
}

// fate is what a reader does with a message it has decided.
type fate uint8

const (
	// fateSkip: not this reader's; skipped and committed.
	fateSkip fate = iota
	// fateMine: returned to the caller.
	fateMine
	// fateSandbox: the baseline reader's verdict on a message a sandbox's
	// reader owns. In the filter mode it leaves it (the sandbox's
	// reader reads the topic too); in the split mode it forwards it to
	// the sandbox's topic ([forwarder]). Either way it
	// is skipped and committed once handed on.
	fateSandbox
)

// ownerMemo is [ownerOf] for a stream of messages of few sandboxes: it
// remembers what ownerOf reads from the table about the last sandbox,
// for as long as the table's content is unchanged ([routes.Table.Changed]),
// so that a message of the same sandbox costs no table lookup and, when
// the sandbox never expires, no clock read. What depends on the clock (a
// sandbox with an expiry: [routes.Table.Sandbox] answers for the table's
// now) is read again for every message, as ownerOf does. Its answers are
// ownerOf's. It is not safe for concurrent use: a reader's is used under
// its fetch lock.
type ownerMemo struct {
	changed <-chan struct{} // the content the facts were read from; nil: none
	id      string
	// route is the sandbox's route for the service, as [routes.Table.Route]
	// returns it (removal and expiry folded into RemovedAt); hasRoute
	// whether there is one.
	route    routes.Route
	hasRoute bool
	// lasting: the sandbox exists and has no expiry, so that
	// [routes.Table.Sandbox] finds it whatever the clock says.
	lasting bool
}

// of returns ownerOf(t, service, id, at). service is the same in every call.
func (m *ownerMemo) of(t *routes.Table, service, id string, at time.Time) (owner, orphan) {
	if ch := t.Changed(); ch != m.changed || id != m.id {
		// The channel is read before the content: a change in between
		// is a newer content under an older key, read again next time.
		m.route, m.hasRoute = t.Route(id, service)
		sb, ok := t.Sandbox(id)
		m.lasting = ok && sb.Expires.IsZero()
		m.changed, m.id = ch, id
	}
	// Table.ActiveAt, from the route: Table.Route folds the expiry into
	// RemovedAt, which is what ActiveAt tests.
	if m.hasRoute && !at.Before(m.route.ActiveFrom) && (m.route.RemovedAt.IsZero() || at.Before(m.route.RemovedAt)) {
		return ownerSandbox, notOrphan
	}
	if m.lasting {
		return ownerBaseline, notOrphan
	}
	return inactiveOwner(t, service, id, at, m.routed)
}

// routed reports whether the remembered sandbox has a route for the service.
func (m *ownerMemo) routed() bool { return m.hasRoute }
