// Package audit writes the one shape of audit record every sandboxkit
// middleware emits, and the span annotation that goes with it. The schema
// (decisions, attribute keys) is public, in package
// github.com/sandboxkit/sandboxkit/audit; this package re-exports it for
// the middleware's own use.
//
// Records go to the *slog.Logger the user hands to the middleware; with no
// logger the library is silent and the audit path costs nothing.
package audit

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Decision is what the library decided about sandbox traffic; the
// values are the public schema's (package audit).
type Decision = pub.Decision

// The decisions.
const (
	Admitted  = pub.Admitted
	Stripped  = pub.Stripped
	Rejected  = pub.Rejected
	Routed    = pub.Routed
	Fallback  = pub.Fallback
	Throttled = pub.Throttled
	Skipped   = pub.Skipped
)

// Protocols.
const (
	HTTP  = pub.HTTP
	GRPC  = pub.GRPC
	Kafka = pub.Kafka
	SQL   = pub.SQL
	Redis = pub.Redis
)

// Event is one audit record.
type Event struct {
	Decision Decision
	Sandbox  propagation.Sandbox
	Protocol string
	Peer     string // remote address, or consumer group
	Target   string // service, upstream, topic or database
	Reason   string
	// TicketKey is the key ID of the ticket that admitted the traffic,
	// "" otherwise.
	TicketKey string
}

// Message is the slog message of every audit record.
const Message = pub.Message

// Attribute keys.
const (
	KeyDecision = pub.KeyDecision
	KeyID       = pub.KeyID
	KeyActor    = pub.KeyActor
	KeyOrigin   = pub.KeyOrigin
	KeyProtocol = pub.KeyProtocol
	KeyPeer     = pub.KeyPeer
	KeyTarget   = pub.KeyTarget
	KeyReason   = pub.KeyReason
	// KeyTicketKey is written only when Event.TicketKey is set.
	KeyTicketKey = pub.KeyTicketKey
)

// Clip shortens the parts of a sandbox that was not admitted, whose values
// are whatever the sender wrote, to pub.MaxValueLen bytes before they go to
// the audit log. A ticket's signature in them is redacted first
// ([propagation.RedactTicketText]): cut inside it, 42 of its 43
// characters would no longer read as a ticket's.
func Clip(s propagation.Sandbox) propagation.Sandbox {
	for _, p := range [...]*string{&s.ID, &s.Actor, &s.Origin} {
		*p = propagation.RedactTicketText(*p)
		if len(*p) > pub.MaxValueLen {
			*p = (*p)[:pub.MaxValueLen] + "..."
		}
	}
	return s
}

// Emit writes ev to l as one record: Warn for stripped, rejected and
// throttled traffic, Info otherwise. A nil l is silent.
func Emit(ctx context.Context, l *slog.Logger, ev Event) {
	if l == nil {
		return
	}
	level := slog.LevelInfo
	switch ev.Decision {
	case Stripped, Rejected, Throttled:
		level = slog.LevelWarn
	}
	if !l.Enabled(ctx, level) {
		return
	}
	// A ticket sent where the ID, actor or origin goes (a script's
	// -H "Sandbox-Id: $TICKET"), or quoted in the reason (an
	// X-Forwarded-For entry that is not an address), is shown without
	// its signature: a record is read by people, and the ticket is a
	// bearer credential. A value without one costs a few substring
	// tests.
	sb := ev.Sandbox
	for _, p := range [...]*string{&sb.ID, &sb.Actor, &sb.Origin, &ev.Reason} {
		*p = propagation.RedactTicketText(*p)
	}
	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String(KeyDecision, string(ev.Decision)),
		slog.String(KeyID, sb.ID),
		slog.String(KeyActor, sb.Actor),
	)
	for _, kv := range [...][2]string{
		{KeyOrigin, sb.Origin},
		{KeyProtocol, ev.Protocol},
		{KeyPeer, ev.Peer},
		{KeyTarget, ev.Target},
		{KeyReason, ev.Reason},
		{KeyTicketKey, ev.TicketKey},
	} {
		if kv[1] != "" {
			attrs = append(attrs, slog.String(kv[0], kv[1]))
		}
	}
	l.LogAttrs(ctx, level, Message, attrs...)
}

// Annotate sets sandbox.id (and sandbox.actor when known) on the span in
// ctx, if it is recording. An actor that holds a ticket (a trusted
// client's mistake, and a valid actor) is set without its signature, as
// in the audit record: tracing back ends keep spans for people to read.
// The ID, a DNS label, cannot hold one.
func Annotate(ctx context.Context, s *propagation.Sandbox) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if s.Actor == "" {
		span.SetAttributes(attribute.String(KeyID, s.ID))
		return
	}
	span.SetAttributes(attribute.String(KeyID, s.ID), attribute.String(KeyActor, propagation.RedactTicketText(s.Actor)))
}
