package grpcmw_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestOTTraceActorsAtk6 is httpmw's test of the same name on gRPC: A's
// grpcmw client interceptors under otelgrpc's client stats handler with
// ottrace, its context holding OpenTelemetry baggage, calling C (grpcmw,
// trusted), for actors ottrace cannot carry as they are. Actors holding
// a '%' are a known fault (see CHANGELOG, atk6): otelgrpc writes the
// mirrored member as it is in ot-baggage-sandbox.actor, which C refuses.
func TestOTTraceActorsAtk6(t *testing.T) {
	fleet := newOTFleet(t)
	toC := fleet.client(t, fleet.library(t, "C"))
	for _, actor := range []string{"alice", "a,b", "a b", "zoë", "50%", "a%41"} {
		t.Run(actor, func(t *testing.T) {
			ctx := withOTelBaggage(t, propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1", Actor: actor}), "tenant=acme")
			seen, err := call(ctx, toC, unary)
			if strings.Contains(actor, "%") {
				// The known limitation: refused, never served as
				// something else (pinned, so that a change either
				// way is seen).
				if status.Code(err) != codes.InvalidArgument {
					t.Errorf("C saw %+v, %v; want the known refusal, InvalidArgument", seen, err)
				}
				return
			}
			if err != nil || seen.Sandbox != "pr-1" || seen.Actor != actor {
				t.Errorf("C saw %+v, %v; want pr-1 with actor %q", seen, err, actor)
			}
		})
	}
}
