package propagation

import (
	"context"

	"go.opentelemetry.io/otel"
	otelprop "go.opentelemetry.io/otel/propagation"
)

// Propagator is an OpenTelemetry TextMapPropagator for the sandbox. Compose
// it after OpenTelemetry's Baggage propagator, whose Inject replaces the
// whole baggage header:
//
//	otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(nil))
//
// Extract is lenient, as the interface requires: markers that cannot be
// read leave the context without a sandbox, and the error goes to
// otel.Handle. The library's own middleware uses the strict
// [Codec.Extract] instead.
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
// reported to otel.Handle and ctx is returned without a sandbox.
func (p Propagator) Extract(ctx context.Context, carrier otelprop.TextMapCarrier) context.Context {
	out, err := p.c().Extract(ctx, carrier)
	if err != nil {
		otel.Handle(err)
	}
	return out
}

// Fields returns the carrier keys the propagator reads and writes.
func (p Propagator) Fields() []string { return p.c().Fields() }
