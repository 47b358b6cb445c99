package grpcmw_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestTicketDoesNotCarryForeignKeys: a valid ticket lets an untrusted
// peer into the sandbox it names, and nothing more. Other tools' routing
// keys on the same call (Signadot's sd-routing-key in baggage and as
// uberctx-sd-routing-key) still come from an untrusted source: a Signadot
// hop further on would route by them. They used to reach the handler's
// metadata and OpenTelemetry baggage, for a forwarding handler or an
// otelgrpc client to send on; they are stripped (and audited), and the
// sandbox admitted.
func TestTicketDoesNotCarryForeignKeys(t *testing.T) {
	signer, verifier := testKeys(t)
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	alice := propagation.Sandbox{ID: "feat-1", Actor: "alice@example.com"}
	ticket, err := signer.SignUntil(alice, issued.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	otelServer := grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(otelprop.Baggage{})))
	bag := "foo=bar,sd-routing-key=x,sandbox.id=feat-1,sandbox.actor=alice%40example.com,sandbox.ticket=" + ticket
	var held []string
	svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		held = md.Get(propagation.SignadotJaegerHeader)
		return "", nil
	}}
	log, logger := newAuditLog()
	opts := serverOpts(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithVerifier(verifier), grpcmw.WithClock(func() time.Time { return issued }), grpcmw.WithLogger(logger))
	addr := start(t, svc, append(opts, otelServer)...)
	client := testpb.NewTestServiceClient(dial(t, addr))
	for _, k := range kinds {
		held = nil
		ctx := metadata.AppendToOutgoingContext(context.Background(), "baggage", bag, propagation.SignadotJaegerHeader, "x")
		seen, err := call(ctx, client, k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if seen.Sandbox != "feat-1" || seen.Actor != "alice@example.com" {
			t.Errorf("%s: handler ran in sandbox %q (actor %q), want feat-1 admitted on the ticket", k, seen.Sandbox, seen.Actor)
		}
		if strings.Contains(seen.Baggage, "sd-routing-key") || strings.Contains(seen.OTel, "sd-routing-key") || len(held) != 0 {
			t.Errorf("%s: the handler still holds the untrusted peer's routing keys: metadata baggage %q, OTel baggage %q, %s %q", k, seen.Baggage, seen.OTel, propagation.SignadotJaegerHeader, held)
		}
		if !strings.Contains(seen.Baggage, "sandbox.id=feat-1") || !strings.Contains(seen.OTel, "sandbox.id=feat-1") {
			t.Errorf("%s: the admitted sandbox's members are gone: metadata baggage %q, OTel baggage %q", k, seen.Baggage, seen.OTel)
		}
	}
	// Two decisions per call: the foreign keys stripped, the sandbox
	// admitted.
	want := []string{}
	for range kinds {
		want = append(want, string(audit.Stripped), string(audit.Admitted))
	}
	if got := log.Decisions(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("audit decisions %q, want %q", got, want)
	}
}
