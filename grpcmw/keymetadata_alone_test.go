package grpcmw_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

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
				// Read in place, and looked up one by one as when
				// gRPC keeps its metadata another way.
				for _, mode := range []struct {
					name string
					opts []grpcmw.ServerOption
				}{{"", nil}, {" looked up", []grpcmw.ServerOption{grpcmw.WithLookUps()}}} {
					n := name + layer.name + mode.name
					with := func(o grpcmw.ServerOption) []grpcmw.ServerOption {
						return append([]grpcmw.ServerOption{o}, mode.opts...)
					}
					cases = append(cases,
						markerFormCase{name: n + "/trusted peer", layer: layer.opts, opts: with(grpcmw.WithTrustedNetworks(loopback)), md: md,
							code: codes.InvalidArgument, msg: "baggage member key", decision: audit.Rejected},
						markerFormCase{name: n + "/trust all", layer: layer.opts, opts: with(grpcmw.TrustAll()), md: md,
							code: codes.InvalidArgument, msg: "baggage member key", decision: audit.Rejected},
						markerFormCase{name: n + "/untrusted peer", layer: layer.opts, opts: with(grpcmw.WithTrustedNetworks(elsewhere)), md: md,
							key: key, decision: audit.Stripped},
					)
				}
			}
		}
	}
	runMarkerForms(t, cases)
}

// TestKeyMetadataReadInPlace: the server reads gRPC's incoming metadata in
// place to look for keys named as ours (with this gRPC; a gRPC that keeps
// its metadata another way fails here, and the server looks each key up,
// correct but slower: see BenchmarkInterceptors' server/baseline), finds
// them in any case, takes nothing else for one (a key that only starts or
// ends as ours, an empty key), and a trusted peer's call without markers
// costs no allocation, also among many keys and with foreign baggage.
func TestKeyMetadataReadInPlace(t *testing.T) {
	if !grpcmw.IncomingKeyFound() {
		t.Fatal("the server does not find gRPC's incoming metadata in the context: each key named as ours is looked up, scanning the metadata")
	}
	p := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}})
	info := &grpc.UnaryServerInfo{FullMethod: "/s/m"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	plain := metadata.MD{"": {"x"}, ":authority": {"cart"}, "baggage": {"foo=bar"}, "content-type": {"application/grpc"}, "user-agent": {"grpc-go"},
		"sandbox.idx": {"x"}, "xsandbox.id": {"x"}, "sandbox.actor2": {"x"}, "uberctx-sandbox": {"x"}, "ot-baggage-sandbox.i": {"x"}, "Sandbox-Actor": {"x"}}
	for _, mode := range []struct {
		name   string
		opts   []grpcmw.ServerOption
		allocs float64 // of a call without markers
	}{{"in place", nil, 0}, {"looked up", []grpcmw.ServerOption{grpcmw.WithLookUps()}, 1}} { // gRPC's copy of the baggage value
		unary := serverIn(t, append(mode.opts, grpcmw.WithTrustedNetworks(loopback))...).Unary()
		for _, tc := range []struct {
			name string
			ctx  context.Context
			code codes.Code
		}{
			{"no metadata", p, codes.OK},
			{"near misses", metadata.NewIncomingContext(p, plain), codes.OK},
			{"canonical actor", metadata.NewIncomingContext(p, metadata.MD{"": {"x"}, "Sandbox.Actor": {"x"}}), codes.InvalidArgument},
			{"upper-case ticket form", metadata.NewIncomingContext(p, metadata.MD{"OT-BAGGAGE-SANDBOX.TICKET": {"x"}}), codes.InvalidArgument},
			{"origin among near misses", metadata.NewIncomingContext(p, metadata.Join(plain, metadata.Pairs("uberctx-sandbox.origin", "x"))), codes.InvalidArgument},
		} {
			if _, err := unary(tc.ctx, nil, info, handler); status.Code(err) != tc.code {
				t.Errorf("%s, %s: err = %v, want code %s", mode.name, tc.name, err, tc.code)
			}
		}
		ctx := metadata.NewIncomingContext(p, plain)
		if n := testing.AllocsPerRun(200, func() { _, _ = unary(ctx, nil, info, handler) }); n != mode.allocs {
			t.Errorf("%s: a trusted peer's call without markers: %v allocations, want %v", mode.name, n, mode.allocs)
		}
	}
}

// TestMarkersReadInPlaceAsLookedUp: read in place, the dedicated header
// and baggage are found as gRPC's lookups find them: the key as it is
// first, else in any case (a layer before the interceptors may hand on
// metadata.MD keys that are not lower-case), with the same outcome either
// way.
func TestMarkersReadInPlaceAsLookedUp(t *testing.T) {
	p := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}})
	info := &grpc.UnaryServerInfo{FullMethod: "/s/m"}
	var got string
	handler := func(ctx context.Context, _ any) (any, error) {
		s, _ := propagation.FromContext(ctx)
		got = s.ID
		return nil, nil
	}
	for _, mode := range []struct {
		name string
		opts []grpcmw.ServerOption
	}{{"in place", nil}, {"looked up", []grpcmw.ServerOption{grpcmw.WithLookUps()}}} {
		unary := serverIn(t, append(mode.opts, grpcmw.WithTrustedNetworks(loopback))...).Unary()
		for _, tc := range []struct {
			name string
			md   metadata.MD
			want string // the sandbox, "" for none
			code codes.Code
		}{
			{"header", metadata.MD{"sandbox-id": {"feat-1"}}, "feat-1", codes.OK},
			{"canonical header", metadata.MD{"Sandbox-Id": {"feat-1"}}, "feat-1", codes.OK},
			{"upper-case baggage", metadata.MD{"BAGGAGE": {"foo=bar,sandbox.id=feat-1"}}, "feat-1", codes.OK},
			{"header as it is before another case", metadata.MD{"sandbox-id": {"feat-1"}, "SANDBOX-ID": {"feat-2"}}, "feat-1", codes.OK},
			{"baggage as it is before another case", metadata.MD{"baggage": {"sandbox.id=feat-1"}, "Baggage": {"sandbox.id=feat-2"}}, "feat-1", codes.OK},
			{"header and baggage disagree across cases", metadata.MD{"Sandbox-Id": {"feat-1"}, "Baggage": {"sandbox.id=feat-2"}}, "", codes.InvalidArgument},
			{"header beside a key named as ours, agreeing", metadata.MD{"Sandbox-Id": {"feat-1"}, "Sandbox.Id": {"feat-1"}}, "feat-1", codes.OK},
			{"header beside a key named as ours, disagreeing", metadata.MD{"Sandbox-Id": {"feat-1"}, "Sandbox.Id": {"feat-2"}}, "", codes.InvalidArgument},
			{"foreign baggage only", metadata.MD{"Baggage": {"foo=bar"}}, "", codes.OK},
		} {
			got = ""
			_, err := unary(metadata.NewIncomingContext(p, tc.md), nil, info, handler)
			if status.Code(err) != tc.code || got != tc.want {
				t.Errorf("%s, %s: sandbox %q, err %v; want %q, code %s", mode.name, tc.name, got, err, tc.want, tc.code)
			}
		}
	}
}
