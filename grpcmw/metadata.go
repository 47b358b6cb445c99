package grpcmw

import (
	"slices"
	"strings"

	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc/metadata"
)

// mdCarrier adapts gRPC metadata to the OpenTelemetry TextMapCarrier the
// codec reads and writes. Values returns the stored slice without copying;
// Delete lets Codec.Strip remove a key outright. gRPC metadata keys are
// lower-case; strings.ToLower returns a lower-case key as it is, without
// allocating.
type mdCarrier metadata.MD

var (
	_ otelprop.TextMapCarrier = mdCarrier(nil)
	_ otelprop.ValuesGetter   = mdCarrier(nil)
)

func (c mdCarrier) Get(key string) string {
	if v := c[strings.ToLower(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Values(key string) []string { return c[strings.ToLower(key)] }

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Delete(key string) { metadata.MD(c).Delete(key) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// markerCarrier is the read-only carrier the server interceptors hand to
// Codec.Read: the values of the two marker keys, already fetched from the
// incoming metadata.
type markerCarrier struct {
	header string   // the dedicated header key, lower-case
	hv, bv []string // its values, and the baggage values
	// named is the call's metadata, where the codec looks up keys named
	// as ours (Codec.KeyHeaders) beside the header and baggage; nil when
	// the call has none of those.
	named metadata.MD
}

func (c *markerCarrier) Values(key string) []string {
	switch key = strings.ToLower(key); key {
	case c.header:
		return c.hv
	case baggageKey:
		return c.bv
	}
	if c.named == nil {
		return nil
	}
	// Every spelling of key: a layer before the interceptors may hand on
	// metadata.MD keys that are not lower-case, and
	// metadata.FromIncomingContext (a handler forwarding its metadata,
	// otelgrpc's carrier) keeps one spelling of each, whichever comes
	// last in map order, so each must agree with the other markers.
	v := c.named[key]
	shared := true // v is the metadata's own slice
	for k, o := range c.named {
		if len(k) == len(key) && k != key && strings.EqualFold(k, key) {
			if shared {
				v, shared = slices.Clone(v), false
			}
			v = append(v, o...)
		}
	}
	return v
}

func (c *markerCarrier) Get(key string) string {
	if v := c.Values(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c *markerCarrier) Set(string, string) {}

func (c *markerCarrier) Keys() []string { return []string{c.header, baggageKey} }

// outCarrier receives what Codec.InjectSandbox writes when there is no
// metadata to merge with.
type outCarrier struct {
	header      string // the dedicated header key, lower-case
	id, baggage string
}

func (c *outCarrier) Set(key, value string) {
	switch strings.ToLower(key) {
	case c.header:
		c.id = value
	case baggageKey:
		c.baggage = value
	}
}

func (c *outCarrier) Get(string) string { return "" }

func (c *outCarrier) Values(string) []string { return nil }

func (c *outCarrier) Keys() []string { return nil }

// otBaggagePrefix is OpenTracing's baggage key form, which OpenTelemetry's
// ottrace propagator reads and writes.
const otBaggagePrefix = "ot-baggage-"

// hasOTKey reports whether md holds a key in OpenTracing's baggage form.
func hasOTKey(md metadata.MD) bool {
	for k := range md {
		if len(k) > len(otBaggagePrefix) && strings.EqualFold(k[:len(otBaggagePrefix)], otBaggagePrefix) {
			return true
		}
	}
	return false
}
