package cart_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/grpcmw"
)

// dial serves a cart with opts and returns a client of it.
func dial(t *testing.T, opts ...grpcmw.ServerOption) *cart.Client {
	t.Helper()
	s, err := cart.NewServer("cart", cart.ListPrice, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(serve(s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cart.NewClient(conn)
}

func TestPrice(t *testing.T) {
	c := dial(t, grpcmw.TrustAll())
	for _, tc := range []struct {
		item  string
		qty   int
		total int64
		code  codes.Code
	}{
		{"mug", 3, 3600, codes.OK},
		{"sticker", 1, 300, codes.OK},
		{"kettle", 1, 0, codes.NotFound},
		{"mug", 0, 0, codes.InvalidArgument},
		{"mug", 1001, 0, codes.InvalidArgument},
	} {
		q, err := c.Price(context.Background(), tc.item, tc.qty)
		if got := status.Code(err); got != tc.code {
			t.Errorf("Price(%s, %d): code %v (%v), want %v", tc.item, tc.qty, got, err, tc.code)
			continue
		}
		if err == nil && (q.GetTotalCents() != tc.total || q.Server != "cart" || q.Item != tc.item || int(q.GetQty()) != tc.qty) {
			t.Errorf("Price(%s, %d) = %v, want total %d from cart", tc.item, tc.qty, q, tc.total)
		}
	}
}

// The server reads the sandbox through grpcmw's interceptors: admitted from
// a trusted peer, stripped from an untrusted one, and a malformed marker
// fails the call with InvalidArgument before the service runs.
func TestServerTrust(t *testing.T) {
	trusted := dial(t, grpcmw.TrustAll())
	untrusted := dial(t, grpcmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8")))
	tagged := func(id string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "sandbox-id", id)
	}
	if q, err := trusted.Price(tagged("pr-42"), "mug", 1); err != nil || q.GetSandbox() != "pr-42" {
		t.Errorf("trusted peer: %v, %v; want sandbox pr-42", q, err)
	}
	if q, err := untrusted.Price(tagged("pr-42"), "mug", 1); err != nil || q.GetSandbox() != "" {
		t.Errorf("untrusted peer: %v, %v; want production", q, err)
	}
	_, err := trusted.Price(tagged("PR_42"), "mug", 1)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "invalid sandbox ID") {
		t.Errorf("malformed marker: %v, want InvalidArgument", err)
	}
}
