package propagation

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
)

// Propagator is an OpenTelemetry TextMapPropagator for the sandbox. Compose
// it after OpenTelemetry's Baggage propagator:
//
//	otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil))
//
// The order matters both ways. On Inject, Baggage replaces the whole
// baggage header, and ours then merges the sandbox into it. On Extract,
// Baggage has already put every member, ours included, into the context's
// OpenTelemetry baggage; when our markers cannot be read, ours takes them
// out again, so that the hop does not send them on.
//
// Extract is lenient, as the interface requires: markers that cannot be
// read leave the context without a sandbox and without our members (under
// any spelling, see [Codec.Strip]) in its OpenTelemetry baggage, and the
// error goes to otel.Handle. A hop that runs only OpenTelemetry
// instrumentation therefore forwards either a readable sandbox or none.
// The library's own middleware uses the strict [Codec.Extract] instead.
type Propagator struct {
	codec *Codec
}

var _ otelprop.TextMapPropagator = Propagator{}

// NewPropagator returns a Propagator using codec, or [Default] when codec is
// nil.
func NewPropagator(codec *Codec) Propagator {
	if codec == nil {
		codec = Default()
	}
	return Propagator{codec: codec}
}

func (p Propagator) c() *Codec {
	if p.codec == nil {
		return defaultCodec
	}
	return p.codec
}

// Inject writes the context's sandbox to carrier (see [Codec.Inject]).
func (p Propagator) Inject(ctx context.Context, carrier otelprop.TextMapCarrier) {
	p.c().Inject(ctx, carrier)
}

// Extract returns ctx carrying the sandbox on carrier. Unreadable markers are
// reported to otel.Handle, and ctx is returned without a sandbox and with
// our members removed from its OpenTelemetry baggage ([Codec.StripContext]).
// With a sandbox, the ticket member (which OpenTelemetry's Baggage
// propagator, placed before, put there) is removed from that baggage: a
// ticket is a credential for the edge's middleware, which reads it from the
// carrier, and goes no further.
func (p Propagator) Extract(ctx context.Context, carrier otelprop.TextMapCarrier) context.Context {
	c := p.c()
	out, err := c.Extract(ctx, carrier)
	if err != nil {
		otel.Handle(err)
		return c.stripContext(ctx, false)
	}
	if out != ctx {
		// A sandbox was read: its ticket, a bearer credential for the
		// edge (which reads it from the carrier, not from here), leaves
		// the baggage before instrumentation starts a span from it
		// (span processors copy baggage into telemetry).
		out = c.dropTicketMember(out)
	}
	return out
}

// dropTicketMember returns ctx without the ticket member, under the key
// OpenTelemetry's parser decoded, in its OpenTelemetry baggage; ctx itself
// when there is none. A ticket under another spelling makes the markers
// unreadable, and Extract then removes all of ours.
func (c *Codec) dropTicketMember(ctx context.Context) context.Context {
	bag := baggage.FromContext(ctx)
	if bag.Member(c.cfg.ticketKey).Key() == "" {
		return ctx
	}
	return baggage.ContextWithBaggage(ctx, bag.DeleteMember(c.cfg.ticketKey))
}

// Fields returns the carrier keys the propagator reads and writes.
func (p Propagator) Fields() []string { return p.c().Fields() }

// NewTextMapPropagator returns the propagator a service registers with
// otel.SetTextMapPropagator: W3C trace context, OpenTelemetry's Baggage
// propagator and a [Propagator] using codec ([Default] when nil), in that
// order. The order matters: Baggage's Extract replaces the context's
// baggage, so a Propagator placed before it could not remove unreadable
// markers from what an OpenTelemetry-only hop forwards.
func NewTextMapPropagator(codec *Codec) otelprop.TextMapPropagator {
	return otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, NewPropagator(codec))
}
