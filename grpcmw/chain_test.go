package grpcmw_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestChainHTTPGRPCHTTP: an HTTP service (httpmw) calls the gRPC service
// "cart" (grpcmw Router and interceptors), which calls the HTTP service
// "inventory" (httpmw Transport and Handler). Sandbox feat-1 overrides both
// cart and inventory: its request must reach the sandbox version of each,
// with the sandbox (and actor) in the context at every hop, across both
// protocol changes. A request without a sandbox stays on the baselines.
func TestChainHTTPGRPCHTTP(t *testing.T) {
	// inventory: HTTP, baseline and sandbox versions.
	inventory := func(name string) *httptest.Server {
		h, err := httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v := url.Values{"server": {name}}
			if s, ok := propagation.FromContext(r.Context()); ok {
				v.Set("sandbox", s.ID)
				v.Set("actor", s.Actor)
			}
			fmt.Fprint(w, v.Encode())
		}), httpmw.TrustAll())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv
	}
	invBaseline, invSandbox := inventory("inventory-baseline"), inventory("inventory-sandbox")

	// cart: gRPC, baseline and sandbox versions, each calling inventory
	// through httpmw's transport.
	table := routes.New()
	httpTransport := &http.Transport{}
	t.Cleanup(httpTransport.CloseIdleConnections)
	invTransport, err := httpmw.NewRoutingTransport(httpTransport, table, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	toInventory := &http.Client{Transport: invTransport}
	cart := func(name string) string {
		return start(t, &grpctest.Service{Name: name, Forward: func(ctx context.Context) (string, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, invBaseline.URL+"/stock", nil)
			if err != nil {
				return "", err
			}
			resp, err := toInventory.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}}, serverOpts(t, grpcmw.TrustAll())...)
	}
	cartBaseline, cartSandbox := cart("cart-baseline"), cart("cart-sandbox")

	if err := table.Update([]routes.Sandbox{{
		ID: "feat-1", Actor: "alice@example.com",
		Services: map[string]routes.Route{"cart": {Upstream: cartSandbox}, "inventory": {Upstream: invSandbox.URL}},
	}}); err != nil {
		t.Fatal(err)
	}

	// front: HTTP at the edge, trusting loopback, calling cart over gRPC.
	router, err := grpcmw.NewRouter(dial(t, cartBaseline, clientOpts(t)...), table, "cart", plaintext, grpcmw.WithDialOptions(clientOpts(t)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { router.Close() })
	cartClient := testpb.NewTestServiceClient(router)
	frontHandler, err := httpmw.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, err := call(r.Context(), cartClient, unary)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, seen.String())
	}), httpmw.WithTrustedNetworks(loopback))
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(frontHandler)
	t.Cleanup(front.Close)
	frontTransport := &http.Transport{}
	t.Cleanup(frontTransport.CloseIdleConnections)

	for _, tc := range []struct {
		name                   string
		header                 http.Header
		cart, inventory, actor string
		sandbox                string
	}{
		{"sandbox", http.Header{"Sandbox-Id": {"feat-1"}, "Baggage": {"sandbox.id=feat-1,sandbox.actor=alice%40example.com"}},
			"cart-sandbox", "inventory-sandbox", "alice@example.com", "feat-1"},
		{"baseline", http.Header{}, "cart-baseline", "inventory-baseline", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, front.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = tc.header
			resp, err := frontTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("front: %d %s %v", resp.StatusCode, body, err)
			}
			cartSeen, err := grpctest.Parse(string(body))
			if err != nil {
				t.Fatal(err)
			}
			inv, err := url.ParseQuery(cartSeen.Next)
			if err != nil {
				t.Fatal(err)
			}
			if cartSeen.Server != tc.cart || cartSeen.Sandbox != tc.sandbox || cartSeen.Actor != tc.actor {
				t.Errorf("gRPC hop: %s saw sandbox %q actor %q; want %s, %q, %q", cartSeen.Server, cartSeen.Sandbox, cartSeen.Actor, tc.cart, tc.sandbox, tc.actor)
			}
			if inv.Get("server") != tc.inventory || inv.Get("sandbox") != tc.sandbox || inv.Get("actor") != tc.actor {
				t.Errorf("HTTP hop after gRPC: %v; want %s, %q, %q", inv, tc.inventory, tc.sandbox, tc.actor)
			}
		})
	}
}
