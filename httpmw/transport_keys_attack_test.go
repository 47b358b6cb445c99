package httpmw_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestTransportNonCanonicalMarkerKeys: a request without a sandbox in its
// context whose header map holds a marker under a key that is not in
// canonical form (req.Header["sandbox-id"] set directly, as code copying
// gRPC metadata does) goes out under that key, and the next hop's server
// canonicalises it: the next hop serves the request as that sandbox. The
// routing transport's scan for markers without a context looked only at
// canonical keys, so it sent such a request to the production upstream
// of a service the sandbox overrides, unbudgeted. It reads every
// spelling of the marker names now, as the next hop will.
func TestTransportNonCanonicalMarkerKeys(t *testing.T) {
	routedAsHeadersSay(t, []http.Header{
		{"sandbox-id": {"pr-1"}},
		{"SANDBOX-ID": {"pr-1"}},
		{"baggage": {"tenant=acme,sandbox.id=pr-1"}},
		{"Accept": {"*/*"}, "baggage": {"sandbox.id=pr-1"}, "Baggage": {"tenant=acme"}},
	}, http.Header{"Sandbox-Id": {"pr-1"}, "sandbox-id": {"pr-2"}})
}

// routedAsHeadersSay sends requests without a sandbox in their context
// through a routing transport for cart, which pr-1 overrides: each of
// valid, whose markers name pr-1, must reach pr-1's own cart; conflict,
// whose markers name two sandboxes under two spellings, must not be sent.
func routedAsHeadersSay(t *testing.T, valid []http.Header, conflict http.Header) {
	t.Helper()
	baseline, sandbox := newUpstream(t, "baseline"), newUpstream(t, "sandbox")
	tab := newTable(t, routes.Sandbox{ID: "pr-1", Services: map[string]routes.Route{"cart": {Upstream: sandbox.URL}}})
	c := newClient(t, must(httpmw.NewRoutingTransport(&http.Transport{}, tab, "cart")))
	for _, h := range valid {
		req := mustRequest(t, context.Background(), http.MethodGet, baseline.URL+"/items", nil)
		req.Header = h.Clone()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("header %v: %v", h, err)
		}
		if got := decodeSeen(t, resp); got.Server != "sandbox" || got.Sandbox != "pr-1" {
			t.Errorf("header %v: served by %s as %q; want pr-1's own cart", h, got.Server, got.Sandbox)
		}
	}
	hb, hs := baseline.hits.Load(), sandbox.hits.Load()
	req := mustRequest(t, context.Background(), http.MethodGet, baseline.URL+"/items", nil)
	req.Header = conflict.Clone()
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("two sandboxes under two spellings (%v): status %d; want an error, nothing sent", conflict, resp.StatusCode)
	}
	if baseline.hits.Load() != hb || sandbox.hits.Load() != hs {
		t.Error("a request with unreadable markers was sent")
	}
}

// TestTrailerMarkersNotRead pins what happens to a marker name in an
// outgoing request's trailers (Trailer: Sandbox-Id, sent after a chunked
// body): the transport sends it as it is, and it names no sandbox: a Go
// server puts trailers in Request.Trailer, never in Request.Header, and
// httpmw reads markers from Request.Header alone, which the whole request
// has been read against before the trailers arrive. RFC 9110 (6.5.1)
// forbids a hop to merge trailer fields into the header section unless
// their definition allows it, which ours does not.
func TestTrailerMarkersNotRead(t *testing.T) {
	type view struct{ sandbox, trailer string }
	got := make(chan view, 1)
	srv := httptest.NewServer(must(httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := propagation.FromContext(r.Context())
		io.Copy(io.Discard, r.Body)
		got <- view{s.ID, r.Trailer.Get("Sandbox-Id") + "|" + r.Trailer.Get("Baggage")}
	}), httpmw.TrustAll())))
	defer srv.Close()
	c := newClient(t, must(httpmw.NewTransport(&http.Transport{})))
	for _, ctx := range []context.Context{context.Background(), sandboxCtx("pr-1", "")} {
		req := mustRequest(t, ctx, http.MethodPost, srv.URL, io.NopCloser(strings.NewReader("body")))
		req.ContentLength = -1 // chunked, so that trailers go out
		req.Trailer = http.Header{"Sandbox-Id": {"pr-2"}, "Baggage": {"sandbox.id=pr-2"}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want, _ := propagation.FromContext(ctx)
		if v := <-got; v.sandbox != want.ID || v.trailer != "pr-2|sandbox.id=pr-2" {
			t.Errorf("served as %q with trailers %q; want %q, trailers as sent and not read", v.sandbox, v.trailer, want.ID)
		}
	}
}
