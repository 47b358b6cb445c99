package grpcmw_test

import (
	"context"
	"strings"
	"testing"

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

// TestEarlySandboxOfAnotherCodec: an operator gives the interceptors a
// codec with another header name (x-sandbox) but leaves otelgrpc's
// propagators on the default one, a propagation.Propagator that puts the
// sandbox into the context before any interceptor runs. An untrusted
// peer's sandbox-id is no marker to the interceptors, which used to pass
// the context on as it came: the handler ran in the sandbox, unaudited.
// Whatever put it there, a sandbox in the context of a call from an
// untrusted peer that the interceptors did not admit is taken out, and
// the call stripped and audited. A trusted peer's context is left alone.
func TestEarlySandboxOfAnotherCodec(t *testing.T) {
	custom, err := propagation.NewCodec(propagation.WithHeader("x-sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	early := grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithPropagators(
		otelprop.NewCompositeTextMapPropagator(otelprop.Baggage{}, propagation.NewPropagator(nil)))))
	for _, tc := range []struct {
		name     string
		opts     []grpcmw.ServerOption
		sandbox  string
		decision []string
	}{
		{"untrusted peer", []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, "", []string{string(audit.Stripped)}},
		{"zero policy", nil, "", []string{string(audit.Stripped)}},
		{"trusted peer", []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, "feat-1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range kinds {
				log, logger := newAuditLog()
				svc := &grpctest.Service{Name: "svc"}
				opts := append(tc.opts, grpcmw.WithCodec(custom), grpcmw.WithLogger(logger))
				addr := start(t, svc, append(serverOpts(t, opts...), early)...)
				client := testpb.NewTestServiceClient(dial(t, addr))
				seen, err := call(metadata.AppendToOutgoingContext(context.Background(), "sandbox-id", "feat-1"), client, k)
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if seen.Sandbox != tc.sandbox {
					t.Errorf("%s: handler ran in sandbox %q, want %q", k, seen.Sandbox, tc.sandbox)
				}
				if got := log.Decisions(); len(got) != len(tc.decision) || (len(got) > 0 && got[0] != tc.decision[0]) {
					t.Errorf("%s: audit decisions %q, want %q", k, got, tc.decision)
				}
				for _, rec := range log.Records() {
					if !strings.HasPrefix(rec[audit.KeyReason], audit.ReasonUntrusted) || rec[audit.KeyID] != "feat-1" {
						t.Errorf("%s: audit record %v: want the untrusted reason and the sandbox", k, rec)
					}
				}
			}
		})
	}
}
