package gateway_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/examples/shop/gateway"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The gateway's gRPC edge sends a call with pr-42's ticket to pr-42's
// cart, and one with a forged marker and no ticket to the baseline, as
// grpcurl -rpc-header does against go run ./examples/shop -serve.
func ExampleNewGRPC() {
	key := propagation.Key{ID: "shop", Secret: []byte("example secret of at least 32 bytes!")}
	verifier, _ := propagation.NewVerifier(key)
	signer, _ := propagation.NewSigner(key)
	serve := func(s *grpc.Server) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		go s.Serve(ln)
		return ln.Addr().String()
	}
	must := func(s *grpc.Server, err error) *grpc.Server {
		if err != nil {
			panic(err)
		}
		return s
	}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	dial := func(addr string) *grpc.ClientConn {
		conn, _ := grpc.NewClient(addr, creds)
		return conn
	}

	baseline := must(cart.NewServer("cart", cart.ListPrice, grpcmw.TrustAll()))
	defer baseline.Stop()
	changed := must(cart.NewServer("cart@pr-42", cart.BulkDiscount, grpcmw.TrustAll()))
	defer changed.Stop()
	baselineAddr, changedAddr := serve(baseline), serve(changed)
	table, _ := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"cart": {Upstream: changedAddr}}},
	})
	toBaseline := dial(baselineAddr)
	defer toBaseline.Close()
	router, _ := grpcmw.NewRouter(toBaseline, table, "cart", grpcmw.WithDialOptions(creds))
	defer router.Close()

	edge := must(gateway.NewGRPC(verifier, cart.NewClient(router)))
	defer edge.Stop()
	toEdge := dial(serve(edge))
	defer toEdge.Close()
	c := cart.NewClient(toEdge)

	pr42 := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	ticket, _ := signer.Sign(pr42, time.Hour)
	withTicket := propagation.Default().HTTPHeader(pr42).Get("Baggage") + ",sandbox.ticket=" + ticket
	for _, tc := range []struct {
		name string
		md   []string
	}{
		{"no markers", nil},
		{"pr-42 with its ticket", []string{"baggage", withTicket}},
		{"forged, no ticket", []string{"sandbox-id", "pr-42"}},
	} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), tc.md...)
		q, err := c.Price(ctx, "mug", 3)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: %d cents from %s, sandbox %q\n", tc.name, q.GetTotalCents(), q.GetServer(), q.GetSandbox())
	}
	// Output:
	// no markers: 3600 cents from cart, sandbox ""
	// pr-42 with its ticket: 2880 cents from cart@pr-42, sandbox "pr-42"
	// forged, no ticket: 3600 cents from cart, sandbox ""
}
