package grpcmw_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestKeyMetadataCaseVariantsAtk5: metadata named as one of our keys
// beside the markers must agree with them in every case it is spelled in
// (a layer before the interceptors may hand on metadata.MD keys that are
// not lower-case, as TestMarkersReadInPlaceAsLookedUp has it), read in
// place as looked up: metadata.FromIncomingContext, which a handler that
// forwards its metadata and otelgrpc's carrier use, merges the spellings
// into one key, so a disagreeing spelling is one more value of it.
//
// Looked up (a gRPC whose incoming metadata the server cannot read in
// place), gRPC's copy of the metadata is all there is: it keeps one
// spelling of each key, as it does for a forwarding handler.
//
// Before the fix, read in place, the key as it is hid another spelling
// that disagreed (admitted feat-1 where the looked-up path refused), and
// two other spellings were read in map order (one of them only).
func TestKeyMetadataCaseVariantsAtk5(t *testing.T) {
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
			want string
			code codes.Code
			// gRPC's copy (metadata.FromIncomingContext), all the
			// looked-up path has, keeps one spelling, in map order.
			inPlaceOnly bool
		}{
			{"agreeing, two spellings", metadata.MD{"sandbox-id": {"feat-1"}, "ot-baggage-sandbox.id": {"feat-1"}, "Ot-Baggage-Sandbox.id": {"feat-1"}}, "feat-1", codes.OK, false},
			{"lower-case agrees, canonical disagrees", metadata.MD{"sandbox-id": {"feat-1"}, "ot-baggage-sandbox.id": {"feat-1"}, "Ot-Baggage-Sandbox.id": {"feat-2"}}, "", codes.InvalidArgument, true},
			{"two upper spellings, one disagrees", metadata.MD{"sandbox-id": {"feat-1"}, "OT-BAGGAGE-SANDBOX.ID": {"feat-1"}, "Ot-Baggage-Sandbox.Id": {"feat-2"}}, "", codes.InvalidArgument, true},
			{"actor spellings disagree", metadata.MD{"baggage": {"sandbox.id=feat-1,sandbox.actor=alice"}, "uberctx-sandbox.actor": {"alice"}, "Uberctx-Sandbox.actor": {"mallory"}}, "", codes.InvalidArgument, true},
		} {
			if tc.inPlaceOnly && mode.name != "in place" {
				continue
			}
			for i := 0; i < 20; i++ { // map order varies
				got = ""
				_, err := unary(metadata.NewIncomingContext(p, tc.md), nil, info, handler)
				if status.Code(err) != tc.code || got != tc.want {
					t.Errorf("%s, %s: sandbox %q, err %v; want %q, code %s", mode.name, tc.name, got, err, tc.want, tc.code)
					break
				}
			}
		}
	}
}
