package propagation_test

import (
	"net/http"
	"strings"
	"testing"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestKeyNamedAsStandardHeader (atk4): since 15f3db1 a header named as
// any of the codec's keys (the actor's, origin's and ticket's too) is a
// marker alone on HTTP, unreadable, and so is its spelling with '-' for a
// '_' (see Codec.alias). A codec configured with a key, or a dedicated
// header, that is the name of a header clients send for their own
// reasons (WithBaggageKeys("sandbox", "actor", "origin"): every
// browser's CORS or POST request carries Origin) answered every such
// request from a trusted source 400 and stripped the header from every
// other, with a record each time. A configuration that cannot work is
// the constructor's error.
func TestKeyNamedAsStandardHeader(t *testing.T) {
	// What the codec did with a browser's request before.
	if c, err := propagation.NewCodec(propagation.WithBaggageKeys("sandbox", "actor", "origin")); err == nil {
		h := http.Header{"Origin": {"https://shop.example"}, "User-Agent": {"Mozilla/5.0"}}
		m, rerr := c.Read(otelprop.HeaderCarrier(h))
		t.Errorf("origin key: NewCodec accepted it; a browser's Origin header reads as Found=%v, %v", m.Found, rerr)
	}
	bad := map[string][]propagation.Option{
		"origin key":            {propagation.WithBaggageKeys("sandbox", "actor", "origin")},
		"from actor":            {propagation.WithBaggageKeys("sb.id", "from", "sb.origin")},
		"ticket authorization":  {propagation.WithTicketKey("authorization")},
		"id key user agent":     {propagation.WithBaggageKeys("User-Agent", "a", "o")},
		"underscore request id": {propagation.WithBaggageKeys("sb.id", "x_request_id", "sb.origin")},
		"header origin":         {propagation.WithHeader("Origin")},
		"header underscore":     {propagation.WithHeader("X_Forwarded_For")},
		"header traceparent":    {propagation.WithHeader("traceparent")},
	}
	for name, opts := range bad {
		_, err := propagation.NewCodec(opts...)
		if err == nil || !strings.Contains(err.Error(), "standard") {
			t.Errorf("%s: NewCodec = %v, want an error naming the standard header", name, err)
		}
	}
	for name, opts := range map[string][]propagation.Option{
		"defaults":   nil,
		"short keys": {propagation.WithBaggageKeys("i", "a", "o"), propagation.WithTicketKey("t")},
		"mixed":      {propagation.WithBaggageKeys("tenant_sb-id", "tenant-sb_actor", "t-s-o"), propagation.WithTicketKey("t_k-t")},
		"x-sandbox":  {propagation.WithHeader("X-Sandbox"), propagation.WithBaggageKeys("origin.id", "user.actor", "sb.origin")},
		"no header":  {propagation.WithHeader("")},
		"compat":     {propagation.WithSignadot(), propagation.WithOkteto()},
	} {
		if _, err := propagation.NewCodec(opts...); err != nil {
			t.Errorf("%s: NewCodec: %v", name, err)
		}
	}
}
