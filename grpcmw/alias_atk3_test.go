package grpcmw_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestMixedSpellingsConfiguredCodecs (atk3): with codecs configured with
// unusual names (a dedicated header holding '_' or '.', one longer than
// 64 bytes, baggage keys mixing '_' and '-', Signadot), a marker key with
// its hyphens and underscores mixed at random, alone or under one or two
// grpc-gateway prefixes spelled so too, is stripped from an untrusted
// peer's call with an audit record; a key differing at its last byte,
// or 64 bytes longer, makes no record.
func TestMixedSpellingsConfiguredCodecs(t *testing.T) {
	codecs := map[string][]propagation.Option{
		"underscore": {propagation.WithHeader("X_Sandbox_Id")},
		"dot":        {propagation.WithHeader("x.sandbox-id")},
		"long":       {propagation.WithHeader("x-" + strings.Repeat("ab-", 20) + "sandbox-id")},
		"keys":       {propagation.WithBaggageKeys("tenant_sb-id", "tenant-sb_actor", "t-s-o"), propagation.WithTicketKey("t_k-t"), propagation.WithSignadot()},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	mix := func(s string) string {
		b := []byte(strings.ToLower(s))
		for i := range b {
			if b[i] == '-' || b[i] == '_' {
				b[i] = "-_"[rng.IntN(2)]
			}
		}
		return string(b)
	}
	var cases []markerFormCase
	for cname, opts := range codecs {
		c, err := propagation.NewCodec(opts...)
		if err != nil {
			t.Fatal(err)
		}
		names := append([]string{c.Header(), propagation.SignadotJaegerHeader}, c.KeyHeaders()[:3]...)
		for _, n := range names {
			// Neighbours (the last byte changed, 64 bytes more) are
			// nothing: the call is served with no record.
			for _, key := range []string{mix(n[:len(n)-1] + "q"), mix(n + strings.Repeat("z", 64)), mix("grpc-metadata-" + n[:len(n)-1] + "q")} {
				cases = append(cases, markerFormCase{
					name: cname + "/not/" + key,
					opts: []grpcmw.ServerOption{grpcmw.WithCodec(c), grpcmw.WithTrustedNetworks(elsewhere)},
					md:   []string{key, "feat-1", "baggage", "foo=bar"},
				})
			}
			for _, key := range []string{mix(n), mix("grpc-metadata-" + n), mix("grpc-metadata-grpc-metadata-" + n)} {
				cases = append(cases, markerFormCase{
					name: cname + "/" + key,
					opts: []grpcmw.ServerOption{grpcmw.WithCodec(c), grpcmw.WithTrustedNetworks(elsewhere)},
					md:   []string{key, "feat-1", "baggage", "foo=bar"}, key: key, decision: audit.Stripped,
				})
			}
		}
	}
	runMarkerForms(t, cases)
}

// TestUpperCaseMetadataLayer (atk3): an earlier server interceptor that
// builds the incoming metadata itself may leave keys in upper case
// (metadata.MD is a map; only its constructors lower-case). A handler
// that reads them with metadata.FromIncomingContext (which lower-cases)
// or ValueFromIncomingContext (which ignores case) sees the marker; so
// our interceptors must find them whatever their case.
func TestUpperCaseMetadataLayer(t *testing.T) {
	for _, key := range []string{
		"Sandbox-Id", "SANDBOX_ID", "Uberctx-Sandbox.id", "Uberctx_SD-Routing-Key", "Grpc-Metadata-Sandbox-Id",
		"GRPC_METADATA-grpc-metadata-Sandbox_Id", "Ot-Baggage_sandbox.ID", "Baggage",
	} {
		t.Run(key, func(t *testing.T) {
			val := "feat-1"
			if key == "Baggage" {
				val = "sandbox.id=feat-1"
			}
			layer := func(ctx context.Context) context.Context {
				md, _ := metadata.FromIncomingContext(ctx)
				md[key] = []string{val} // as a hand-rolled layer may
				return metadata.NewIncomingContext(ctx, md)
			}
			var held []string
			var got bool
			svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
				md, _ := metadata.FromIncomingContext(ctx)
				held = md.Get(key)
				_, got = propagation.FromContext(ctx)
				return "", nil
			}}
			log, logger := newAuditLog()
			in := serverIn(t, grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithLogger(logger))
			addr := start(t, svc,
				grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					return h(layer(ctx), req)
				}, in.Unary()),
				grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
					return h(srv, &ctxStream{ss, layer(ss.Context())})
				}, in.Stream()))
			client := testpb.NewTestServiceClient(dial(t, addr))
			for _, k := range kinds {
				held, got = nil, false
				if _, err := call(context.Background(), client, k); err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				if len(held) != 0 || got {
					t.Errorf("%s: the handler holds %s = %q (sandbox in context: %v) from an untrusted peer", k, key, held, got)
				}
			}
			if d := log.Decisions(); len(d) != len(kinds) {
				t.Errorf("audit decisions %q, want %d stripped", d, len(kinds))
			}
		})
	}
}
