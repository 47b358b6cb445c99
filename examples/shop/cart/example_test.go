package cart_test

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// serve serves s on a loopback port and returns its address.
func serve(s *grpc.Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go s.Serve(ln)
	return ln.Addr().String()
}

// The baseline cart and sandbox pr-42's changed cart run side by side; a
// grpcmw.Router in front sends each call to the one its sandbox says.
func ExampleNewServer() {
	baseline, err := cart.NewServer("cart", cart.ListPrice, grpcmw.TrustAll())
	if err != nil {
		panic(err)
	}
	defer baseline.Stop()
	changed, err := cart.NewServer("cart@pr-42", cart.BulkDiscount, grpcmw.TrustAll())
	if err != nil {
		panic(err)
	}
	defer changed.Stop()
	baselineAddr, changedAddr := serve(baseline), serve(changed)

	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"cart": {Upstream: changedAddr}}},
	})
	if err != nil {
		panic(err)
	}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	conn, err := grpc.NewClient(baselineAddr, creds)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	router, err := grpcmw.NewRouter(conn, table, "cart", grpcmw.WithDialOptions(creds))
	if err != nil {
		panic(err)
	}
	defer router.Close()
	c := cart.NewClient(router)

	for _, ctx := range []context.Context{
		context.Background(),
		propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"}),
		propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-7"}),
	} {
		q, err := c.Price(ctx, "mug", 3)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%-10s %5d cents (%s) for sandbox %q\n", q.Server, q.TotalCents, q.Rule, q.Sandbox)
	}
	_, err = c.Price(context.Background(), "kettle", 1)
	fmt.Println(err)
	// Output:
	// cart        3600 cents (list price) for sandbox ""
	// cart@pr-42  2880 cents (bulk discount: 20% off 3 or more) for sandbox "pr-42"
	// cart        3600 cents (list price) for sandbox "pr-7"
	// cart: pricing 1 kettle: rpc error: code = NotFound desc = cart: no item "kettle"
}

func ExampleBulkDiscount() {
	for _, qty := range []int{1, 2, 3, 10} {
		total, rule := cart.BulkDiscount(1200, qty)
		fmt.Println(qty, total, rule)
	}
	// Output:
	// 1 1200 list price
	// 2 2400 list price
	// 3 2880 bulk discount: 20% off 3 or more
	// 10 9600 bulk discount: 20% off 3 or more
}
