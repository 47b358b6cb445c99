package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/examples/shop/cartpb"
)

// The gateway's gRPC edge budgets pr-42 as its HTTP edge does: a runaway
// loop over gRPC is served pr-42's burst, then refused with
// ResourceExhausted and one retry hint (RetryInfo and the message agree),
// while production calls are not budgeted. The budgets' clock stands
// still, so the counts do not depend on the machine's speed.
func TestGRPCEdgeBudget(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sh, h := startShop(ctx, t)
	conn, err := grpc.NewClient(sh.gatewayGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := cartpb.NewCartClient(conn)
	sh.clock.hold(pr42Burst * pr42Refill) // a full bucket, and no refill
	defer sh.clock.release()
	sandbox := metadata.AppendToOutgoingContext(ctx, "baggage", h.Get("Baggage"))
	served := 0
	for i := range 2 * pr42Burst {
		q, err := c.Price(sandbox, &cartpb.PriceRequest{Item: "mug", Qty: 1})
		if err == nil {
			if q.GetSandbox() != pr42ID {
				t.Fatalf("call %d served as %q, want pr-42", i+1, q.GetSandbox())
			}
			served++
			continue
		}
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("call %d: %v, want ResourceExhausted", i+1, err)
		}
		var hint time.Duration
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				hint = ri.GetRetryDelay().AsDuration()
			}
		}
		if hint <= 0 || !strings.Contains(st.Message(), "retry after "+hint.String()) {
			t.Errorf("call %d: RetryInfo %v and message %q do not agree", i+1, hint, st.Message())
		}
	}
	if served != pr42Burst {
		t.Errorf("pr-42 was served %d calls in a row over gRPC, want its burst %d", served, pr42Burst)
	}
	for i := range 2 * pr42Burst {
		if q, err := c.Price(ctx, &cartpb.PriceRequest{Item: "mug", Qty: 1}); err != nil || q.GetSandbox() != "" {
			t.Errorf("production call %d: %v, %v", i+1, q, err)
		}
	}
}
