package grpcmw_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/baggage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketStaysAtTheEdgeGRPC: a server admits an untrusted peer's call
// on its ticket, behind otelgrpc's stats handler with the README's
// propagators. The ticket is a bearer credential: it must not reach the
// handler in anything the handler may send on, neither the incoming
// metadata (a handler forwarding it with metadata.NewOutgoingContext) nor
// the context's OpenTelemetry baggage (which otelgrpc's and otelhttp's
// Baggage propagator write on every outgoing call, to any host, and span
// processors copy into telemetry). The sandbox itself is admitted.
func TestTicketStaysAtTheEdgeGRPC(t *testing.T) {
	ticket, verifier, issued := ticketFor(t, propagation.Sandbox{ID: "feat-1", Actor: "alice"})
	sig := ticket[strings.LastIndexByte(ticket, '.')+1:]
	var mu sync.Mutex
	var leaks []string
	b := &grpctest.Service{Name: "B", Forward: func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		md, _ := metadata.FromIncomingContext(ctx)
		for k, vs := range md {
			for _, v := range vs {
				if strings.Contains(v, sig) {
					leaks = append(leaks, fmt.Sprintf("incoming metadata %s: %s", k, v))
				}
			}
		}
		for _, m := range baggage.FromContext(ctx).Members() {
			if strings.Contains(m.Value(), sig) {
				leaks = append(leaks, "context baggage "+m.Key())
			}
		}
		return "", nil
	}}
	for _, withOTel := range []bool{false, true} {
		t.Run(fmt.Sprintf("otelgrpc=%v", withOTel), func(t *testing.T) {
			var opts []grpc.ServerOption
			if withOTel {
				opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(propagation.NewTextMapPropagator(nil)))))
			}
			addr := start(t, b, append(opts, serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier),
				grpcmw.WithClock(func() time.Time { return issued }))...)...)
			toB := testpb.NewTestServiceClient(dial(t, addr))
			for _, bag := range []string{
				"tenant=acme,sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket=" + ticket,
				"sandbox.ticket=" + ticket + ";p=1,sandbox.actor=alice,sandbox.id=feat-1",
			} {
				for _, k := range kinds {
					md := metadata.Pairs("baggage", bag, "grpc-metadata-baggage", bag)
					seen, err := call(metadata.NewOutgoingContext(context.Background(), md), toB, k)
					if err != nil {
						t.Fatalf("%s: %v", k, err)
					}
					if seen.Sandbox != "feat-1" {
						t.Errorf("%s: handler ran in %q, want feat-1 admitted on the ticket", k, seen.Sandbox)
					}
					mu.Lock()
					for _, l := range leaks {
						t.Errorf("%s, baggage %q: the ticket reached the handler: %s", k, bag, l)
					}
					leaks = leaks[:0]
					mu.Unlock()
				}
			}
		})
	}
}

// TestRejectedTicketNotEchoedGRPC: a call refused for its tickets (two
// different ones, one of them valid) is answered InvalidArgument; the
// status message, which the client and any proxy log, names neither
// ticket's signature.
func TestRejectedTicketNotEchoedGRPC(t *testing.T) {
	signer, verifier := testKeys(t)
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := propagation.Sandbox{ID: "feat-1", Actor: "alice"}
	t1, err := signer.SignUntil(s, issued.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t2, err := signer.SignUntil(s, issued.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, &grpctest.Service{Name: "B"}, serverOpts(t, grpcmw.WithVerifier(verifier),
		grpcmw.WithClock(func() time.Time { return issued }))...)
	toB := testpb.NewTestServiceClient(dial(t, addr))
	md := metadata.Pairs("baggage", "sandbox.id=feat-1,sandbox.actor=alice,sandbox.ticket="+t1+",sandbox.ticket="+t2)
	_, err = call(metadata.NewOutgoingContext(context.Background(), md), toB, unary)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("two tickets: %v, want InvalidArgument", err)
	}
	for _, tk := range []string{t1, t2} {
		if sig := tk[strings.LastIndexByte(tk, '.')+1:]; strings.Contains(err.Error(), sig) {
			t.Errorf("the status message echoes a ticket: %v", err)
		}
	}
}
