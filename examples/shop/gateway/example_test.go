package gateway_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/examples/shop/gateway"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// The gateway admits a sandbox only with a ticket it can verify: a bad or
// expired ticket is answered with 400 before any service is called, and
// errors of the services behind it become HTTP statuses. (The order
// service is not reached here; go run ./examples/shop runs the rest.)
func ExampleNew() {
	key := propagation.Key{ID: "shop", Secret: []byte("example secret of at least 32 bytes!")}
	verifier, _ := propagation.NewVerifier(key)
	signer, _ := propagation.NewSigner(key)

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	cartServer, err := cart.NewServer("cart", cart.ListPrice, grpcmw.TrustAll())
	if err != nil {
		panic(err)
	}
	go cartServer.Serve(ln)
	defer cartServer.Stop()
	conn, _ := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	toOrders, _ := httpmw.NewTransport(nil)
	ordersClient := orders.NewClient("http://127.0.0.1:1", &http.Client{Transport: toOrders})

	gwHandler, err := gateway.New(verifier, cart.NewClient(conn), ordersClient)
	if err != nil {
		fmt.Println(err)
		return
	}
	gw := httptest.NewServer(gwHandler)
	defer gw.Close()
	defer gw.Client().CloseIdleConnections()

	pr42 := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
	expired, _ := signer.SignUntil(pr42, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	forAnother, _ := signer.Sign(propagation.Sandbox{ID: "pr-7", Actor: "alice"}, time.Hour)
	for _, c := range []struct {
		name, ticket, item string
	}{
		{"expired ticket", expired, "mug"},
		{"ticket of pr-7", forAnother, "mug"},
		{"no markers, unknown item", "", "kettle"},
	} {
		req, _ := http.NewRequest(http.MethodPost, gw.URL+"/checkout",
			strings.NewReader(url.Values{"item": {c.item}, "qty": {"1"}}.Encode()))
		if c.ticket != "" {
			req.Header = propagation.Default().HTTPHeader(pr42) // Sandbox-Id and baggage
			req.Header.Set("Baggage", req.Header.Get("Baggage")+",sandbox.ticket="+c.ticket)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := gw.Client().Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s: %d %s", c.name, resp.StatusCode, body)
	}
	// Output:
	// expired ticket: 400 bad sandbox markers: propagation: sandbox ticket expired: at 2026-01-01T00:00:00Z
	// ticket of pr-7: 400 bad sandbox markers: propagation: invalid sandbox ticket: signature does not match sandbox "pr-42", actor "alice", origin ""
	// no markers, unknown item: 404 gateway: cart: pricing 1 kettle: rpc error: code = NotFound desc = cart: no item "kettle"
}
