package grpcmw_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The server interceptors admit the markers of trusted peers (here,
// loopback) and reject unreadable ones with InvalidArgument.
func ExampleNewServerInterceptors() {
	in, err := grpcmw.NewServerInterceptors(grpcmw.WithTrustedNetworks(netip.MustParsePrefix("127.0.0.0/8")))
	if err != nil {
		panic(err)
	}
	addr, stop, err := grpctest.Start(&grpctest.Service{Name: "cart"},
		grpc.ChainUnaryInterceptor(in.Unary()),
		grpc.ChainStreamInterceptor(in.Stream()),
	)
	if err != nil {
		panic(err)
	}
	defer stop()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer cc.Close()
	cart := testpb.NewTestServiceClient(cc)

	for _, id := range []string{"feat-1", "Not_A_Label"} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "sandbox-id", id)
		resp, err := cart.UnaryCall(ctx, &testpb.SimpleRequest{})
		if err != nil {
			fmt.Println(err)
			continue
		}
		seen, _ := grpctest.Parse(string(resp.GetPayload().GetBody()))
		fmt.Printf("handler ran in sandbox %q\n", seen.Sandbox)
	}
	// Output:
	// handler ran in sandbox "feat-1"
	// rpc error: code = InvalidArgument desc = grpcmw: sandbox markers rejected: propagation: invalid sandbox ID: "Not_A_Label" (want a DNS label: lower-case letters, digits and inner hyphens, at most 63)
}

// The client interceptors send the context's sandbox along with the call.
func ExampleNewClientInterceptors() {
	in, err := grpcmw.NewServerInterceptors(grpcmw.TrustAll())
	if err != nil {
		panic(err)
	}
	addr, stop, err := grpctest.Start(&grpctest.Service{Name: "cart"}, grpc.ChainUnaryInterceptor(in.Unary()))
	if err != nil {
		panic(err)
	}
	defer stop()
	out, err := grpcmw.NewClientInterceptors()
	if err != nil {
		panic(err)
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(out.Unary()),
		grpc.WithChainStreamInterceptor(out.Stream()),
	)
	if err != nil {
		panic(err)
	}
	defer cc.Close()
	cart := testpb.NewTestServiceClient(cc)

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1", Actor: "alice"})
	resp, err := cart.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		panic(err)
	}
	seen, _ := grpctest.Parse(string(resp.GetPayload().GetBody()))
	fmt.Printf("sandbox %q, actor %q\nsandbox-id: %s\nbaggage: %s\n", seen.Sandbox, seen.Actor, seen.Header, seen.Baggage)
	// Output:
	// sandbox "feat-1", actor "alice"
	// sandbox-id: feat-1
	// baggage: sandbox.id=feat-1,sandbox.actor=alice
}

// A Router sends the calls of sandbox feat-1, which overrides cart, to
// the sandbox's cart; every other call goes to the baseline.
func ExampleNewRouter() {
	in, err := grpcmw.NewServerInterceptors(grpcmw.TrustAll())
	if err != nil {
		panic(err)
	}
	server := grpc.ChainUnaryInterceptor(in.Unary())
	baselineAddr, stopBaseline, err := grpctest.Start(&grpctest.Service{Name: "cart baseline"}, server)
	if err != nil {
		panic(err)
	}
	defer stopBaseline()
	sandboxAddr, stopSandbox, err := grpctest.Start(&grpctest.Service{Name: "cart of feat-1"}, server)
	if err != nil {
		panic(err)
	}
	defer stopSandbox()

	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "feat-1", Services: map[string]routes.Route{"cart": {Upstream: sandboxAddr}}},
	})
	if err != nil {
		panic(err)
	}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	baseline, err := grpc.NewClient(baselineAddr, creds)
	if err != nil {
		panic(err)
	}
	defer baseline.Close()
	router, err := grpcmw.NewRouter(baseline, table, "cart", grpcmw.WithDialOptions(creds))
	if err != nil {
		panic(err)
	}
	defer router.Close()
	cart := testpb.NewTestServiceClient(router)

	for _, ctx := range []context.Context{
		context.Background(),
		propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1"}),
		propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-2"}),
	} {
		resp, err := cart.UnaryCall(ctx, &testpb.SimpleRequest{})
		if err != nil {
			panic(err)
		}
		seen, _ := grpctest.Parse(string(resp.GetPayload().GetBody()))
		fmt.Printf("%s served sandbox %q\n", seen.Server, seen.Sandbox)
	}
	// Output:
	// cart baseline served sandbox ""
	// cart of feat-1 served sandbox "feat-1"
	// cart baseline served sandbox "feat-2"
}

// A server protects itself from a runaway sandbox: a call over the
// sandbox's budget fails with ResourceExhausted (rate) or Unavailable
// (breaker open, too many in flight), with a RetryInfo detail, and the
// handler does not run. The client interceptors take the same option.
func ExampleWithBreaker() {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1, Burst: 1}},
		breaker.WithClock(func() time.Time { return now })) // a fixed clock keeps the output stable
	in, err := grpcmw.NewServerInterceptors(grpcmw.TrustAll(), grpcmw.WithBreaker(g))
	if err != nil {
		panic(err)
	}
	addr, stop, err := grpctest.Start(&grpctest.Service{Name: "cart"},
		grpc.ChainUnaryInterceptor(in.Unary()),
		grpc.ChainStreamInterceptor(in.Stream()))
	if err != nil {
		panic(err)
	}
	defer stop()
	out, err := grpcmw.NewClientInterceptors()
	if err != nil {
		panic(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(out.Unary()))
	if err != nil {
		panic(err)
	}
	defer cc.Close()
	cart := testpb.NewTestServiceClient(cc)

	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "feat-1"})
	for _, ctx := range []context.Context{ctx, ctx, context.Background()} {
		_, err := cart.UnaryCall(ctx, &testpb.SimpleRequest{})
		st := status.Convert(err)
		if err == nil {
			fmt.Println("served")
			continue
		}
		fmt.Println(st.Code(), st.Message())
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				fmt.Println("retry in", ri.GetRetryDelay().AsDuration())
			}
		}
	}
	// Output:
	// served
	// ResourceExhausted grpcmw: call to /grpc.testing.TestService/UnaryCall refused: breaker: rate limit exceeded for sandbox "feat-1" (retry after 1s)
	// retry in 1s
	// served
}
