// Package ingress is the admission kernel the adapters share (httpmw's
// handler and proxy, grpcmw's server interceptors, kafkamw's reader): once
// an adapter has read a request's markers and judged its source, a [Gate]
// turns the trust verdict into what follows from it, the same way for every
// protocol: the audit record (decision and reason from the public schema,
// sender-written values clipped), the span attributes, the sandbox in the
// context, and the markers taken out of the context when they are stripped.
//
// Reading markers from the protocol's carrier, judging the peer and
// removing markers from the protocol's own headers stay in the adapters.
// A request without markers never reaches the kernel: its cost stays the
// adapter's (zero allocations).
package ingress

import (
	"context"
	"errors"
	"log/slog"

	otelprop "go.opentelemetry.io/otel/propagation"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Gate applies the outcome of admission for one adapter. It is built once,
// when the middleware is, and is immutable; its zero value is not usable
// (Codec is required).
type Gate struct {
	Codec  *propagation.Codec
	Logger *slog.Logger // nil: no audit records
	Policy trust.Policy
	// Protocol is the record's protocol (audit.HTTP, audit.GRPC,
	// audit.Kafka).
	Protocol string
}

// ErrUnexplained stands in for a missing reason of a strip or reject,
// which [trust.Policy.Decide] does not return today.
var ErrUnexplained = errors.New("sandbox markers refused")

// Decide returns the policy's verdict on markers m (and the error the
// codec returned reading them) from a source that is trusted by network or
// not, with the error that explains a [trust.Strip] or [trust.Reject],
// never nil for those two.
func (g *Gate) Decide(m *propagation.Markers, readErr error, sourceTrusted bool) (trust.Verdict, error) {
	v, why := g.Policy.Decide(m, readErr, sourceTrusted)
	if why == nil && (v == trust.Strip || v == trust.Reject) {
		why = ErrUnexplained
	}
	return v, why
}

// Logging reports whether the gate writes audit records; an adapter checks
// it before building what only a record needs.
func (g *Gate) Logging() bool { return g.Logger != nil }

// Admit is the [trust.Admit] outcome: it returns ctx carrying m.Sandbox,
// with the span attributes set, and writes the admitted record (reason:
// valid ticket, with the ticket's key ID, when a verified ticket admitted
// it; trusted source otherwise). peer and target describe the request for
// the record.
//
// A ticket among the markers leaves the context's OpenTelemetry baggage
// ([propagation.Codec.StripTicketContext]): it is a bearer credential for
// this edge, and OpenTelemetry's Baggage propagator would write it on
// every outgoing call; the adapter removes it from the headers or
// metadata it hands on.
func (g *Gate) Admit(ctx context.Context, m *propagation.Markers, peer, target string) context.Context {
	if m.Ticket != "" {
		ctx = g.Codec.StripTicketContext(ctx)
	}
	ctx = g.Enter(ctx, m.Sandbox)
	if g.Logger != nil {
		ev := audit.Event{Decision: audit.Admitted, Sandbox: m.Sandbox, Peer: peer, Target: target, Reason: pub.ReasonTrustedSource}
		if m.Ticket != "" && g.Policy.Verifier != nil {
			ev.Reason, ev.TicketKey = pub.ReasonValidTicket, propagation.TicketKeyID(m.Ticket)
		}
		g.Record(ctx, ev)
	}
	return ctx
}

// Enter returns ctx carrying s, with the span attributes of s set on the
// active span: what every admitted request or owned message gets. It
// writes no record (see [Gate.Admit], [Gate.Record]).
func (g *Gate) Enter(ctx context.Context, s propagation.Sandbox) context.Context {
	ctx = g.Codec.ContextWithSandbox(ctx, s)
	audit.Annotate(ctx, &s)
	return ctx
}

// Record writes ev with the gate's protocol, when the gate logs.
func (g *Gate) Record(ctx context.Context, ev audit.Event) {
	if g.Logger == nil {
		return
	}
	ev.Protocol = g.Protocol
	audit.Emit(ctx, g.Logger, ev)
}

// Refuse writes the record of markers that were not admitted: d is
// audit.Stripped or audit.Rejected, s what the sender wrote (clipped to
// audit.MaxValueLen here), why the reason, and detail, when it returns
// text, more about the source after a colon ("...: peer 10.0.0.9 is not in
// a trusted network"). detail is called only when the gate logs, so that
// its formatting costs nothing otherwise; it may be nil.
func (g *Gate) Refuse(ctx context.Context, d audit.Decision, s propagation.Sandbox, peer, target string, why error, detail func() string) {
	if g.Logger == nil {
		return
	}
	reason := why.Error()
	if detail != nil {
		if more := detail(); more != "" {
			reason += ": " + more
		}
	}
	g.Record(ctx, audit.Event{Decision: d, Sandbox: audit.Clip(s), Peer: peer, Target: target, Reason: reason})
}

// Strip removes the gate's markers from c, a copy of the request's
// headers or metadata that the adapter owns, and returns ctx without a
// sandbox and without the codec's members in its OpenTelemetry baggage:
// instrumentation in front of the adapter (otelhttp, a gRPC stats handler)
// may have extracted them already and would send them on.
func (g *Gate) Strip(ctx context.Context, c otelprop.TextMapCarrier) context.Context {
	g.Codec.Strip(c)
	return g.Codec.StripContext(ctx)
}

// ErrForeign is the reason of a record about other tools' routing keys
// (Signadot's, Okteto's) stripped from an untrusted source.
var ErrForeign = errors.New(pub.ReasonForeignKeys)
