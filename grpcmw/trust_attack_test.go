package grpcmw_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestMemberKeyMetadataAlone sends metadata named as our ID baggage key
// (grpcurl -H 'sandbox.id: pr-1'), or as it in Jaeger's or OpenTracing's
// baggage header form (uberctx-sandbox.id, ot-baggage-sandbox.id, which
// their OpenTelemetry propagators read into baggage), and nothing else: no
// sandbox-id, no baggage. It is a marker (issue 13, point 1): from a trusted peer it is
// unreadable, never served as production; from an untrusted one it is
// stripped, so that the handler (which may forward its incoming metadata)
// never holds it.
func TestMemberKeyMetadataAlone(t *testing.T) {
	id := propagation.DefaultIDKey
	for _, key := range []string{id, "uberctx-" + id, "ot-baggage-" + id} {
		for _, tc := range []struct {
			name     string
			opts     []grpcmw.ServerOption
			code     codes.Code
			decision audit.Decision
		}{
			{"trusted peer", []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, codes.InvalidArgument, audit.Rejected},
			{"trust all", []grpcmw.ServerOption{grpcmw.TrustAll()}, codes.InvalidArgument, audit.Rejected},
			{"untrusted peer", []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, codes.OK, audit.Stripped},
		} {
			t.Run(key+"/"+tc.name, func(t *testing.T) {
				log, logger := newAuditLog()
				var held []string
				svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
					md, _ := metadata.FromIncomingContext(ctx)
					held = md.Get(key)
					return "", nil
				}}
				addr := start(t, svc, serverOpts(t, append(tc.opts, grpcmw.WithLogger(logger))...)...)
				client := testpb.NewTestServiceClient(dial(t, addr))
				ctx := metadata.AppendToOutgoingContext(context.Background(), key, "feat-1", "baggage", "foo=bar")
				held = nil
				_, err := call(ctx, client, unary)
				if status.Code(err) != tc.code {
					t.Fatalf("err = %v, want code %s", err, tc.code)
				}
				if tc.code != codes.OK && !strings.Contains(status.Convert(err).Message(), "baggage member key") {
					t.Errorf("message %q does not name the member key", status.Convert(err).Message())
				}
				if len(held) != 0 {
					t.Errorf("the handler's incoming metadata still holds %s: %q", key, held)
				}
				if got := log.Decisions(); len(got) != 1 || got[0] != string(tc.decision) {
					t.Errorf("audit decisions %q, want [%s]", got, tc.decision)
				}
			})
		}
	}
}

// TestOtherSDKsLookalikeMetadata sends baggage whose key OpenTelemetry Go
// does not read as ours but OpenTelemetry Ruby (which deletes ASCII white
// space anywhere in the header) and Python (which strips U+001C..U+001F
// after percent-decoding) do, and then send on as a clean sandbox.id. From
// an untrusted peer it must be stripped, from a trusted one rejected.
func TestOtherSDKsLookalikeMetadata(t *testing.T) {
	for _, bag := range []string{"foo=bar,sand box.id=feat-1", "foo=bar,%1Csandbox.id=feat-1"} {
		for _, tc := range []struct {
			name     string
			opts     []grpcmw.ServerOption
			code     codes.Code
			decision audit.Decision
		}{
			{"trusted peer", []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, codes.InvalidArgument, audit.Rejected},
			{"untrusted peer", []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, codes.OK, audit.Stripped},
		} {
			t.Run(bag+"/"+tc.name, func(t *testing.T) {
				log, logger := newAuditLog()
				svc := &grpctest.Service{Name: "svc"}
				addr := start(t, svc, serverOpts(t, append(tc.opts, grpcmw.WithLogger(logger))...)...)
				client := testpb.NewTestServiceClient(dial(t, addr))
				ctx := metadata.AppendToOutgoingContext(context.Background(), "baggage", bag)
				seen, err := call(ctx, client, unary)
				if status.Code(err) != tc.code {
					t.Fatalf("err = %v, want code %s", err, tc.code)
				}
				if tc.code == codes.OK && seen.Baggage != "foo=bar" {
					t.Errorf("handler saw baggage %q, want %q", seen.Baggage, "foo=bar")
				}
				if got := log.Decisions(); len(got) != 1 || got[0] != string(tc.decision) {
					t.Errorf("audit decisions %q, want [%s]", got, tc.decision)
				}
			})
		}
	}
}
