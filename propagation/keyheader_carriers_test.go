// A header named as one of our actor, origin or ticket keys is a marker
// alone on every carrier (found by the atk attack).

package propagation_test

import (
	"net/http"
	"net/textproto"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestKeyHeaderAloneSameOnEveryCarrier: a header named as our actor,
// origin or ticket key, in any form (sandbox.actor, uberctx-sandbox.actor,
// ot-baggage-sandbox.ticket), alone on a carrier, is a marker to
// Codec.Read on gRPC metadata and Kafka headers (unreadable: a Kafka
// message is not handed to baseline code) and is one to every hop that
// runs OpenTelemetry's Jaeger or OT propagator (it becomes baggage
// sandbox.actor, which the next hop with the library finds unreadable),
// but not to Codec.Read on an http.Header, where only the ID's forms are
// looked for alone. So httpmw lets an untrusted client's
// Uberctx-Sandbox.actor through unstripped and unaudited, and a trusted
// client's request with it is served as production, the header left for
// the next hop (grpcmw, since the atk attack, strips them from untrusted
// peers; its trusted peers get the HTTP behaviour). The same key must
// get the same answer on every carrier.
func TestKeyHeaderAloneSameOnEveryCarrier(t *testing.T) {
	c := propagation.Default()
	for _, k := range c.KeyHeaders() {
		h := http.Header{textproto.CanonicalMIMEHeaderKey(k): {"x"}}
		onHTTP, _ := c.Read(otelprop.HeaderCarrier(h))
		onMap, _ := c.Read(otelprop.MapCarrier{k: "x"})
		if onHTTP.Found != onMap.Found {
			t.Errorf("%s alone: Read finds a marker on a map carrier (%v) but not on an http.Header (%v), nor does Foreign (%v)",
				k, onMap.Found, onHTTP.Found, c.Foreign(otelprop.HeaderCarrier(h)))
		}
	}
}
