package grpcmw_test

import (
	"context"
	"net"
	"reflect"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestClientInterceptors: the context's sandbox reaches the server in
// metadata merged with what the caller set (in NewOutgoingContext metadata
// or appended pairs), on every kind of call; ours replace stale markers,
// foreign baggage members and other keys stay; the caller's metadata is not
// modified; without a sandbox nothing is added.
func TestClientInterceptors(t *testing.T) {
	addr := start(t, &grpctest.Service{Name: "svc"}, serverOpts(t, grpcmw.TrustAll())...)
	client := testpb.NewTestServiceClient(dial(t, addr, clientOpts(t)...))
	sb := propagation.Sandbox{ID: "feat-1", Actor: "alice@example.com"}
	const ours = "sandbox.id=feat-1,sandbox.actor=alice@example.com" // @ needs no escaping in baggage

	for _, tc := range []struct {
		name         string
		md           metadata.MD // set with NewOutgoingContext
		appended     []string    // then AppendToOutgoingContext
		wantBaggage  string
		plainHeader  string // what the server sees without a sandbox
		plainBaggage string
	}{
		{name: "no caller metadata", wantBaggage: ours},
		{name: "caller metadata", md: metadata.Pairs("x-user", "u1"), wantBaggage: ours},
		{name: "appended pairs", appended: []string{"x-user", "u1"}, wantBaggage: ours},
		{name: "caller baggage and stale header", md: metadata.Pairs("x-user", "u1", "baggage", "foo=bar", "sandbox-id", "stale"), wantBaggage: ours + ",foo=bar", plainHeader: "stale", plainBaggage: "foo=bar"},
		{name: "appended baggage", md: metadata.Pairs("x-user", "u1"), appended: []string{"baggage", "foo=bar,sandbox.id=stale"}, wantBaggage: ours + ",foo=bar", plainBaggage: "foo=bar,sandbox.id=stale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range kinds {
				ctx := context.Background()
				if tc.md != nil {
					ctx = metadata.NewOutgoingContext(ctx, tc.md)
				}
				if tc.appended != nil {
					ctx = metadata.AppendToOutgoingContext(ctx, tc.appended...)
				}
				before := tc.md.Copy()
				wantUser := ""
				if tc.md != nil || tc.appended != nil {
					wantUser = "u1"
				}

				seen, err := call(propagation.ContextWithSandbox(ctx, sb), client, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if seen.Sandbox != "feat-1" || seen.Actor != "alice@example.com" || seen.Header != "feat-1" || seen.Baggage != tc.wantBaggage || seen.User != wantUser {
					t.Errorf("%s: server saw sandbox %q actor %q header %q baggage %q user %q; want feat-1, alice@example.com, feat-1, %q, %q",
						k, seen.Sandbox, seen.Actor, seen.Header, seen.Baggage, seen.User, tc.wantBaggage, wantUser)
				}
				if tc.md != nil && !reflect.DeepEqual(tc.md, before) {
					t.Errorf("%s: caller's metadata modified: %v, was %v", k, tc.md, before)
				}

				// Without a sandbox the caller's metadata goes out as it is.
				seen, err = call(ctx, client, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if seen.Header != tc.plainHeader || seen.Baggage != tc.plainBaggage || seen.User != wantUser {
					t.Errorf("%s: without a sandbox the server saw header %q baggage %q user %q; want %q, %q, %q",
						k, seen.Header, seen.Baggage, seen.User, tc.plainHeader, tc.plainBaggage, wantUser)
				}
			}
		})
	}
}

// TestOTelOnlyHop: A (client interceptors) -> B (otelgrpc stats handlers
// only, no sandboxkit) -> C (server interceptors). The sandbox crosses B in
// W3C baggage. The control, with B propagating trace context only, shows
// baggage is what carries it.
func TestOTelOnlyHop(t *testing.T) {
	for _, tc := range []struct {
		name string
		prop otelprop.TextMapPropagator
		want string
	}{
		{"trace context and baggage", otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}), "feat-1"},
		{"trace context only (control)", otelprop.TraceContext{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cAddr := start(t, &grpctest.Service{Name: "C"}, serverOpts(t, grpcmw.TrustAll())...)
			toC := testpb.NewTestServiceClient(dial(t, cAddr, grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithPropagators(tc.prop)))))
			b := &grpctest.Service{Name: "B", Forward: func(ctx context.Context) (string, error) {
				seen, err := call(ctx, toC, unary)
				return seen.String(), err
			}}
			bAddr := start(t, b, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(tc.prop))))
			toB := testpb.NewTestServiceClient(dial(t, bAddr, clientOpts(t)...))

			ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1", Actor: "alice@example.com", Origin: "pr-42"})
			for _, k := range kinds {
				seenB, err := call(ctx, toB, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if seenB.Sandbox != "" {
					t.Fatalf("%s: hop B has sandboxkit in it (sandbox %q in its context)", k, seenB.Sandbox)
				}
				seenC, err := grpctest.Parse(seenB.Next)
				if err != nil {
					t.Fatal(err)
				}
				if seenC.Server != "C" || seenC.Sandbox != tc.want {
					t.Errorf("%s: %s saw sandbox %q, want %q", k, seenC.Server, seenC.Sandbox, tc.want)
				}
				if tc.want != "" && (seenC.Actor != "alice@example.com" || seenC.Header != "") {
					t.Errorf("%s: C saw actor %q and header %q; want the actor from baggage and no dedicated header (B does not forward it)", k, seenC.Actor, seenC.Header)
				}
			}
		})
	}
}

// TestNoSandboxNoAllocs: calls without a sandbox cost no allocation in the
// interceptors (measured around no-op invokers and handlers).
func TestNoSandboxNoAllocs(t *testing.T) {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}})
	out := metadata.AppendToOutgoingContext(ctx, "x-user", "u1")
	in := metadata.NewIncomingContext(ctx, metadata.Pairs("x-user", "u1", ":authority", "svc", "content-type", "application/grpc"))
	inBaggage := metadata.NewIncomingContext(ctx, metadata.Pairs("x-user", "u1", "baggage", "foo=bar,userId=42"))
	client, server := clientIn(t), serverIn(t, grpcmw.WithTrustedNetworks(loopback))

	unaryClient := client.Unary()
	streamClient := client.Stream()
	unaryServer := server.Unary()
	streamServer := server.Stream()
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	streamer := func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, ...grpc.CallOption) (grpc.ClientStream, error) {
		return nil, nil
	}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	streamHandler := func(any, grpc.ServerStream) error { return nil }
	uinfo := &grpc.UnaryServerInfo{FullMethod: "/s/m"}
	sinfo := &grpc.StreamServerInfo{FullMethod: "/s/m"}
	desc := &grpc.StreamDesc{}
	ss := &ctxStream{ctx: in}

	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{"unary client", 0, func() { _ = unaryClient(out, "/s/m", nil, nil, nil, invoker) }},
		{"stream client", 0, func() { _, _ = streamClient(out, desc, nil, "/s/m", streamer) }},
		{"unary server", 0, func() { _, _ = unaryServer(in, nil, uinfo, handler) }},
		{"stream server", 0, func() { _ = streamServer(nil, ss, sinfo, streamHandler) }},
		// gRPC copies the baggage value it hands out: one allocation that
		// is not ours.
		{"unary server, foreign baggage", 1, func() { _, _ = unaryServer(inBaggage, nil, uinfo, handler) }},
	} {
		if got := testing.AllocsPerRun(200, tc.f); got > tc.max {
			t.Errorf("%s: %v allocations per call, want at most %v", tc.name, got, tc.max)
		}
	}
}

// ctxStream is the least grpc.ServerStream the stream interceptor needs.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
