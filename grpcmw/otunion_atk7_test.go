package grpcmw_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTFormUnionAtLimitsAtk7: A's call carries OpenTracing metadata the
// application set (ot-baggage-<key>) and its context carries OpenTelemetry
// baggage with other members. grpcmw's client interceptor writes the
// sandbox in that form and keeps the metadata's members within ottrace's
// limits; then otelgrpc's stats handler, which gRPC runs after the
// interceptors, adds every member of the context's baggage in that form.
// B (otelgrpc with ottrace only) reads the union, and baggage.New drops
// the members over 64 in map order, ours among them or not: C must still
// see A's sandbox.
func TestOTFormUnionAtLimitsAtk7(t *testing.T) {
	fleet := newOTFleet(t)
	toB := fleet.client(t, fleet.otelOnly(t, "B", fleet.library(t, "C")))

	many := func(prefix string, n int) []string {
		var kv []string
		for i := range n {
			kv = append(kv, fmt.Sprintf("%s%02d", prefix, i), "v")
		}
		return kv
	}
	bag := func(n int) string {
		kv := many("k", n)
		var m []string
		for i := 0; i < len(kv); i += 2 {
			m = append(m, kv[i]+"="+kv[i+1])
		}
		return strings.Join(m, ",")
	}
	for _, tc := range []struct {
		name    string
		bag, ot int
	}{
		{"40 context members, 30 OT keys", 40, 30},
		{"63 context members, 63 OT keys", 63, 63},
	} {
		for _, k := range kinds {
			t.Run(tc.name+"/"+string(k), func(t *testing.T) {
				for i := range 10 { // ottrace drops members over the limits in map order
					ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1", Actor: "alice"})
					ctx = withOTelBaggage(t, ctx, bag(tc.bag))
					ctx = metadata.AppendToOutgoingContext(ctx, many("ot-baggage-app", tc.ot)...)
					seen, err := call(ctx, toB, k)
					if err != nil {
						t.Fatalf("call %d: %v", i, err)
					}
					next, err := grpctest.Parse(seen.Next)
					if err != nil || next.Server != "C" || next.Sandbox != "pr-1" {
						t.Fatalf("call %d: C saw %+v (%v); want sandbox pr-1", i, next, err)
					}
				}
			})
		}
	}
}
