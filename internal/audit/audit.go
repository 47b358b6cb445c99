// Package audit is the one shape of the audit record every sandboxkit
// middleware emits, and the span annotation that goes with it.
//
// Records go to the *slog.Logger the user hands to the middleware; with no
// logger the library is silent and the audit path costs nothing.
package audit

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// Decision is what the library decided about sandbox traffic.
type Decision string

// The decisions.
const (
	Admitted  Decision = "admitted"  // markers from a trusted source were accepted
	Stripped  Decision = "stripped"  // markers from an untrusted source were removed
	Rejected  Decision = "rejected"  // unreadable markers from a trusted source were refused
	Routed    Decision = "routed"    // sent to the sandbox's upstream
	Fallback  Decision = "fallback"  // sent to the baseline: the sandbox does not override the target
	Throttled Decision = "throttled" // refused by the sandbox's budget
	Skipped   Decision = "skipped"   // a Kafka message left to its owner, or dropped as unreadable
)

// Protocols.
const (
	HTTP  = "http"
	GRPC  = "grpc"
	Kafka = "kafka"
	SQL   = "sql"
)

// Event is one audit record.
type Event struct {
	Decision Decision
	Sandbox  propagation.Sandbox
	Protocol string
	Peer     string // remote address, or consumer group
	Target   string // service, upstream, topic or database
	Reason   string
}

// Message is the slog message of every audit record.
const Message = "sandboxkit audit"

// Attribute keys.
const (
	KeyDecision = "decision"
	KeyID       = "sandbox.id"
	KeyActor    = "sandbox.actor"
	KeyOrigin   = "sandbox.origin"
	KeyProtocol = "protocol"
	KeyPeer     = "peer"
	KeyTarget   = "target"
	KeyReason   = "reason"
)

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
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String(KeyDecision, string(ev.Decision)),
		slog.String(KeyID, ev.Sandbox.ID),
		slog.String(KeyActor, ev.Sandbox.Actor),
	)
	for _, kv := range [...][2]string{
		{KeyOrigin, ev.Sandbox.Origin},
		{KeyProtocol, ev.Protocol},
		{KeyPeer, ev.Peer},
		{KeyTarget, ev.Target},
		{KeyReason, ev.Reason},
	} {
		if kv[1] != "" {
			attrs = append(attrs, slog.String(kv[0], kv[1]))
		}
	}
	l.LogAttrs(ctx, level, Message, attrs...)
}

// Annotate sets sandbox.id (and sandbox.actor when known) on the span in
// ctx, if it is recording.
func Annotate(ctx context.Context, s *propagation.Sandbox) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if s.Actor == "" {
		span.SetAttributes(attribute.String(KeyID, s.ID))
		return
	}
	span.SetAttributes(attribute.String(KeyID, s.ID), attribute.String(KeyActor, s.Actor))
}
