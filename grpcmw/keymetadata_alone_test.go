package grpcmw_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestKeyMetadataAloneSameAsHTTP: metadata named as any of our baggage
// keys in any of its forms (propagation.Codec.KeyHeaders: sandbox.actor,
// uberctx-sandbox.origin, ot-baggage-sandbox.ticket as much as
// sandbox.id), alone on a call, gets the answer httpmw gives an HTTP
// request with that header (sandboxkit issue 13): a trusted source's is
// unreadable (400 there, InvalidArgument here, the handler not called, one
// rejected record), an untrusted source's is stripped and audited. Checked
// over the four kinds of call to a real server on loopback, the key alone
// and among ten others, as gRPC hands it on and behind a layer that
// hands on keys in an HTTP header's canonical case (Sandbox.Actor).
//
// Before the fix a trusted peer's call with any form of the actor's,
// origin's or ticket's key was served as production, the key passed on to
// a next hop that refuses it.
func TestKeyMetadataAloneSameAsHTTP(t *testing.T) {
	codec := propagation.Default()
	httpStatus := func(trusted string, header string) int {
		t.Helper()
		h, err := httpmw.NewHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), httpmw.WithTrustedNetworks(netip.MustParsePrefix(trusted)))
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = "127.0.0.1:1234"
		req.Header[textproto.CanonicalMIMEHeaderKey(header)] = []string{"x"}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	var cases []markerFormCase
	for _, key := range codec.KeyHeaders() {
		// What HTTP answers is what gRPC must.
		if got := httpStatus("127.0.0.0/8", key); got != http.StatusBadRequest {
			t.Fatalf("httpmw answers a trusted request with %s alone %d, want 400", key, got)
		}
		if got := httpStatus("10.0.0.0/8", key); got != http.StatusOK {
			t.Fatalf("httpmw answers an untrusted request with %s alone %d, want 200", key, got)
		}
		for _, many := range []bool{false, true} {
			md := []string{key, "x"}
			name := key
			if many {
				name += " among many"
				for i := range 10 {
					md = append(md, fmt.Sprintf("x-filler-%d", i), "v")
				}
			}
			for _, layer := range []struct {
				name string
				opts []grpc.ServerOption
			}{{"", nil}, {" canonical keys", httpKeys()}} {
				n := name + layer.name
				cases = append(cases,
					markerFormCase{name: n + "/trusted peer", layer: layer.opts, opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, md: md,
						code: codes.InvalidArgument, msg: "baggage member key", decision: audit.Rejected},
					markerFormCase{name: n + "/trust all", layer: layer.opts, opts: []grpcmw.ServerOption{grpcmw.TrustAll()}, md: md,
						code: codes.InvalidArgument, msg: "baggage member key", decision: audit.Rejected},
					markerFormCase{name: n + "/untrusted peer", layer: layer.opts, opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md,
						key: key, decision: audit.Stripped},
				)
			}
		}
	}
	runMarkerForms(t, cases)
}
