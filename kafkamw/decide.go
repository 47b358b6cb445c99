package kafkamw

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// verdict is what a reader does with a message it has decided.
type verdict struct {
	fate    fate
	sandbox string // the message's sandbox, for fateSandbox
}

// decide decides msg from the route table (the filter mode, and the
// baseline reader in either mode): it reads the message's sandbox, waits
// for the table to sync up to the message's time, asks [ownerOf] and
// audits the decision. With fateMine it returns the context to process
// msg with.
func (r *Reader) decide(ctx context.Context, msg *kafka.Message) (context.Context, verdict, error) {
	untagged := verdict{fate: r.role.untagged()}
	if len(msg.Headers) == 0 {
		// Untagged. A list of headers none of which can be a marker
		// ([markers.plain]) is untagged too: fetch tests that before it
		// settles a message, and scanKey finds nothing in one.
		return ctx, untagged, nil
	}
	// What the codec reads from the headers: the last list's answer,
	// read in place (not copied) when the list is the same, as it is
	// for a stream of one sandbox's messages.
	m, err := &r.last.m, r.last.err
	if !r.last.matches(msg.Headers) {
		var k memoKey
		st, memoize := r.markers.scanKey(msg.Headers, &k)
		if st == lookalike {
			r.unreadableMessage(ctx, msg, propagation.Sandbox{}, errLookalike)
			return ctx, verdict{}, nil
		}
		if st != hasMarkers {
			return ctx, untagged, nil
		}
		read, rerr := r.readKey(msg.Headers, &k, memoize)
		if memoize {
			r.last.remember(msg.Headers, read, rerr)
		}
		m, err = &read, rerr
	}
	if err != nil {
		r.unreadableMessage(ctx, msg, m.Sandbox, err)
		return ctx, verdict{}, nil
	}
	if !m.Found {
		return ctx, untagged, nil
	}
	s := m.Sandbox
	if !r.role.concerns(s.ID) {
		return ctx, verdict{}, nil // another sandbox's, or the baseline's
	}
	if !r.cfg.table.SyncedUpTo(msg.Time) { // the common case, synced, without a call to synced
		if err := r.synced(ctx, msg); err != nil {
			return ctx, verdict{}, err
		}
	}
	who, why := r.owners.of(r.cfg.table, r.cfg.service, s.ID, msg.Time) // ownerOf's answer
	if who == ownerNone {
		r.orphaned(ctx, msg, s, why)
		return ctx, verdict{}, nil
	}
	if r.gate.Logging() {
		ev := r.events[0]
		if who == ownerSandbox {
			ev = r.events[1]
		}
		ev.Sandbox, ev.Target = s, msg.Topic
		r.gate.Record(ctx, ev)
	}
	v := verdict{fate: r.role.fate(who), sandbox: s.ID}
	if v.fate != fateMine {
		return ctx, v, nil
	}
	return r.enter(ctx, s), v, nil
}

// enterMemo is the contexts the last owned tagged messages were returned
// with, one per sandbox for the last few sandboxes, and what they were
// derived from: a stream's messages of one sandbox, fetched with one
// context, share one rather than each allocating its own, also when the
// messages of a few sandboxes the reader owns take turns (the baseline
// reader owns those of every sandbox that does not override its
// service). A context is immutable, so the shared one is the one each
// would get. All entries derive from one parent context: a message
// fetched with another drops them, so that the memo holds on to one
// caller context, as a single entry did.
type enterMemo struct {
	e    [enterSlots]entered
	next int // the slot the next new sandbox takes
}

// enterSlots is how many sandboxes' contexts the reader remembers.
const enterSlots = 4

type entered struct {
	parent context.Context // comparable with ==: only such contexts are remembered
	s      propagation.Sandbox
	ctx    context.Context
	span   trace.Span // ctx's span
}

// enter is r.gate.Enter(ctx, s), which an owned tagged message is returned
// with, without deriving the context again when an owned tagged message
// of the same sandbox had the same: the span attributes are set for each
// message all the same, when the span records. The caller holds the fetch
// lock.
func (r *Reader) enter(ctx context.Context, s propagation.Sandbox) context.Context {
	m := &r.entered
	for i := range m.e {
		e := &m.e[i]
		if e.ctx != nil && e.parent == ctx && e.s == s {
			if e.span.IsRecording() {
				audit.Annotate(e.ctx, &s) // the rest of Gate.Enter
			}
			return e.ctx
		}
	}
	out := r.gate.Enter(ctx, s)
	// == on interfaces panics when the dynamic values cannot be compared,
	// which a comparable type can hide (context.WithoutCancel's value, a
	// struct embedding a context): only types == cannot panic on are
	// remembered.
	if ctx == nil || !safeEqual(reflect.TypeOf(ctx)) {
		*m = enterMemo{}
		return out
	}
	if m.e[0].ctx != nil && m.e[0].parent != ctx {
		*m = enterMemo{} // another caller context: the others' are of no use
	}
	m.e[m.next] = entered{parent: ctx, s: s, ctx: out, span: trace.SpanFromContext(out)}
	m.next = (m.next + 1) % enterSlots
	return out
}

// safeEqual reports whether == on two values of type t can never panic:
// t is comparable and holds no interface, whose dynamic value may not be.
// A pointer, the common context, is settled at once.
func safeEqual(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Interface, reflect.Map, reflect.Slice, reflect.Func:
		return false
	case reflect.Array:
		return safeEqual(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !safeEqual(t.Field(i).Type) {
				return false
			}
		}
	}
	return true
}

// unreadableMessage accounts for a message whose sandbox headers cannot
// be read: the baseline reader, its owner of last resort, dead-letters and
// audits it; every reader counts it.
func (r *Reader) unreadableMessage(ctx context.Context, msg *kafka.Message, s propagation.Sandbox, err error) {
	if r.role.baseline() {
		dl := r.deadLetterOrSkip(ctx, msg, err.Error())
		r.gate.Refuse(ctx, audit.Rejected, s, r.group, msg.Topic, errUnreadable, func() string { return err.Error() + dl })
	}
	r.unreadable.Add(1)
}

// orphaned handles a message of sandbox s that belongs to no reader: the
// baseline reader writes it to the dead-letter writer, if there is one,
// and audits it; a sandbox reader audits it. Both count it. A failed
// dead-letter write does not keep the message ([Reader.deadLetterOrSkip]).
func (r *Reader) orphaned(ctx context.Context, msg *kafka.Message, s propagation.Sandbox, why orphan) {
	deadLetter := r.role.baseline() && r.cfg.deadLetter != nil
	if !deadLetter && !r.gate.Logging() {
		r.orphans.Add(1) // no one to tell: a flood of orphans costs no allocation
		return
	}
	reason := "orphaned message of sandbox " + s.ID + ": " + why.String() + "; no reader of " + r.cfg.service + " owns it"
	var dl string
	if deadLetter {
		dl = r.deadLetterOrSkip(ctx, msg, reason)
	}
	r.orphans.Add(1)
	if r.gate.Logging() {
		d := audit.Skipped
		if r.role.baseline() {
			d = audit.Rejected // the owner of last resort refuses it
		}
		r.gate.Record(ctx, audit.Event{
			// Not admitted: the sender's values are clipped, as every
			// adapter's records of refused markers are.
			Decision: d, Sandbox: audit.Clip(s), Peer: r.group, Target: msg.Topic,
			Reason: reason + ", skipped" + dl,
		})
	}
}

// decisionEvents returns the audit records of a tagged message whose route
// is inactive ([0]) or active ([1]) at its time, for a baseline or a sandbox
// reader.
func decisionEvents(baseline bool, service, group string) [2]audit.Event {
	ev := func(d audit.Decision, reason string) audit.Event {
		return audit.Event{Decision: d, Peer: group, Reason: reason}
	}
	notOverridden := pub.ReasonNotOverridden + ": " + service + " at the message's time"
	if baseline {
		return [2]audit.Event{
			ev(audit.Fallback, notOverridden+"; consumed by the baseline reader"),
			ev(audit.Skipped, "left to the sandbox's reader: the sandbox overrides "+service+" at the message's time"),
		}
	}
	return [2]audit.Event{
		ev(audit.Skipped, notOverridden+"; left to the baseline reader"),
		ev(audit.Routed, "consumed by the sandbox's reader of "+service),
	}
}

// synced waits (bounded) until the route table has synced up to msg's
// time, so that the decision is not made on a table that has not yet seen
// what the source said then; a table that has never loaded from its source
// is synced up to nothing ([routes.Table.SyncedAt]), so a tagged message
// is never decided before the table's first load.
func (r *Reader) synced(ctx context.Context, msg *kafka.Message) error {
	at := msg.Time
	if r.cfg.table.SyncedUpTo(at) {
		return nil
	}
	if now := time.Now(); at.After(now.Add(MaxClockSkew)) {
		// A timestamp this far ahead: the producer's clock is off (or it
		// set Message.Time itself). Waiting for the table to reach it
		// would stall the partition until the wall clock catches up, so
		// decide with the table synced up to now: readers whose sources
		// are healthy then hold the same document. Not with a table that
		// is behind (its source failing since its last load), which may
		// no longer hold what the others hold.
		if err := r.waitSynced(ctx, msg, now); err != nil {
			return err
		}
		r.future.Add(1)
		return nil
	}
	return r.waitSynced(ctx, msg, at)
}

// waitSynced waits, up to the route wait, until the table has synced up
// to at ([routes.Table.WaitSynced]), and returns [ErrRoutesBehind] naming
// msg if it has not.
func (r *Reader) waitSynced(ctx context.Context, msg *kafka.Message, at time.Time) error {
	t := r.cfg.table
	if t.SyncedUpTo(at) {
		return nil
	}
	r.waits.Add(1)
	wctx, cancel := context.WithTimeout(ctx, r.cfg.routeWait)
	defer cancel()
	if err := t.WaitSynced(wctx, at); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		synced := "never"
		if s := t.SyncedAt(); !s.IsZero() {
			synced = s.UTC().Format(time.RFC3339Nano)
		}
		return fmt.Errorf("%w: message %s at %s, table synced up to %s, waited %s",
			ErrRoutesBehind, coordinates(msg), msg.Time.UTC().Format(time.RFC3339Nano), synced, r.cfg.routeWait)
	}
	return nil
}
