package grpcmw_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketCarriesNothingElse: a valid ticket from an untrusted peer
// admits its sandbox and nothing more. Markers beside it that name
// another sandbox in a carrier the gRPC server does not read as one
// (grpc-gateway's forms, which an HTTP hop reads as the dedicated header
// and baggage once a handler copies its metadata onto an HTTP request;
// Jaeger's and OpenTracing's baggage header forms) must not reach the
// handler.
func TestTicketCarriesNothingElse(t *testing.T) {
	ticket, verifier, issued := ticketFor(t, propagation.Sandbox{ID: "feat-1", Actor: "alice"})
	var mu sync.Mutex
	var got metadata.MD
	b := &grpctest.Service{Name: "B", Forward: func(ctx context.Context) (string, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		got = md
		mu.Unlock()
		return "", nil
	}}
	addr := start(t, b, serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier),
		grpcmw.WithClock(func() time.Time { return issued }))...)
	toB := testpb.NewTestServiceClient(dial(t, addr))
	for _, extra := range [][2]string{
		{"grpc-metadata-sandbox-id", "pr-2"},
		{"grpc-metadata-baggage", "sandbox.id=pr-2"},
		{"grpc-metadata-sandbox.id", "pr-2"},
		{"grpc-metadata-uberctx-sandbox.id", "pr-2"},
		{"uberctx-sandbox.id", "pr-2"},
		{"ot-baggage-sandbox.id", "pr-2"},
		{"sandbox_id", "pr-2"},
	} {
		md := metadata.Pairs("baggage", "sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket="+ticket, extra[0], extra[1])
		seen, err := call(metadata.NewOutgoingContext(context.Background(), md), toB, unary)
		if err != nil {
			// Refusing the call is as good as dropping what rode along.
			t.Logf("%s: %v", extra[0], err)
			continue
		}
		if seen.Sandbox != "feat-1" {
			t.Errorf("%s: handler ran in %q", extra[0], seen.Sandbox)
		}
		mu.Lock()
		for k, vs := range got {
			for _, v := range vs {
				if strings.Contains(v, "pr-2") {
					t.Errorf("%s: the handler's metadata holds %s", extra[0], fmt.Sprintf("%s: %s", k, v))
				}
			}
		}
		mu.Unlock()
	}
}
