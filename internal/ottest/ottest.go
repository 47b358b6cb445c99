// Package ottest reads headers as a hop running OpenTelemetry's OT
// propagator (go.opentelemetry.io/contrib/propagators/ot) would, for the
// differential tests of httpmw and grpcmw: another parser on the same
// bytes.
package ottest

import (
	"context"
	"net/http"
	"net/textproto"
	"testing"

	"go.opentelemetry.io/contrib/propagators/ot"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// Propagators are what such a hop runs: W3C trace context and baggage,
// and the OT format.
var Propagators = otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, ot.OT{})

// TraceHeaders are OT trace headers, without which the OT propagator
// reads no baggage.
var TraceHeaders = [...][2]string{
	{"ot-tracer-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"},
	{"ot-tracer-spanid", "00f067aa0ba902b7"},
	{"ot-tracer-sampled", "true"},
}

// Quiet silences OpenTelemetry's global error handler until t ends: the
// OT propagator reports every value it cannot read to it, which logs.
func Quiet(t testing.TB) {
	prev := otel.GetErrorHandler()
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	t.Cleanup(func() { otel.SetErrorHandler(prev) })
}

// Ours returns the members of c's keys that the OT propagator reads from
// h, a request's headers or a call's metadata (names in any case: they
// are canonicalised, as a server hands them over).
func Ours(c *propagation.Codec, h map[string][]string) map[string]string {
	canon := Canonical(h)
	ours := OurKeys(c)
	out := map[string]string{}
	for _, m := range baggage.FromContext(ot.OT{}.Extract(context.Background(), otelprop.HeaderCarrier(canon))).Members() {
		if ours[m.Key()] {
			out[m.Key()] = m.Value()
		}
	}
	return out
}

// OurKeys is the set of c's baggage keys.
func OurKeys(c *propagation.Codec) map[string]bool {
	ours := map[string]bool{}
	for _, k := range c.Keys() {
		ours[k] = true
	}
	return ours
}

// Canonical returns h with canonical header names, as a server hands a
// request's headers over (a gRPC call's metadata is lower-case).
func Canonical(h map[string][]string) http.Header {
	canon := http.Header{}
	for k, vs := range h {
		k = textproto.CanonicalMIMEHeaderKey(k)
		canon[k] = append(canon[k], vs...)
	}
	return canon
}
