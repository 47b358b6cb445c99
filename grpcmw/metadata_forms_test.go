package grpcmw_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/internal/grpctest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// markerFormCase is a call with markers in a metadata form that some hop
// reads as one, and what the server must make of it.
type markerFormCase struct {
	name     string
	opts     []grpcmw.ServerOption
	md       []string // sent
	key      string   // the metadata key the handler must not see, "" when it may
	code     codes.Code
	msg      string              // part of the error message
	decision audit.Decision      // "" for no record
	layer    []grpc.ServerOption // run before the interceptors (httpKeys)
}

// runMarkerForms sends each case over the four kinds of call to a real
// server on loopback and checks the call's code, the audit record and
// that the handler, which might forward its incoming metadata, does not
// hold the key.
func runMarkerForms(t *testing.T, cases []markerFormCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log, logger := newAuditLog()
			var held []string
			svc := &grpctest.Service{Name: "svc", Forward: func(ctx context.Context) (string, error) {
				if tc.key != "" {
					md, _ := metadata.FromIncomingContext(ctx)
					held = md.Get(tc.key)
				}
				return "", nil
			}}
			addr := start(t, svc, append(tc.layer[:len(tc.layer):len(tc.layer)], serverOpts(t, append(tc.opts, grpcmw.WithLogger(logger))...)...)...)
			client := testpb.NewTestServiceClient(dial(t, addr))
			for i, k := range kinds {
				held = nil
				before := svc.Calls()
				_, err := call(metadata.AppendToOutgoingContext(context.Background(), tc.md...), client, k)
				if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
					t.Fatalf("%s: err = %v, want code %s containing %q", k, err, tc.code, tc.msg)
				}
				if tc.code != codes.OK && svc.Calls() != before {
					t.Errorf("%s: the handler ran for a rejected call", k)
				}
				if len(held) != 0 {
					t.Errorf("%s: the handler's incoming metadata still holds %s: %q", k, tc.key, held)
				}
				var want []string
				if tc.decision != "" {
					for range i + 1 {
						want = append(want, string(tc.decision))
					}
				}
				if got := log.Decisions(); len(got) != len(want) || (len(want) > 0 && got[i] != want[i]) {
					t.Errorf("%s: audit decisions %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestUnderscoreMetadataAlone sends, alone, the underscore spelling of a
// marker header (sandbox_id, uberctx_sandbox.id, Signadot's
// uberctx_sd_routing_key), which CGI, WSGI, Rack and PHP hops read as the
// hyphenated one (HTTP_SANDBOX_ID): a handler that forwards its incoming
// metadata to such a hop would steer it into a sandbox. httpmw strips and
// audits them from untrusted sources (Codec.Foreign); so must the server
// interceptors, also when nothing else of ours is on the call. A trusted
// peer keeps them, as in httpmw.
func TestUnderscoreMetadataAlone(t *testing.T) {
	var cases []markerFormCase
	for _, key := range []string{"sandbox_id", "uberctx_sandbox.id", "ot_baggage_sandbox.id", "uberctx_sd_routing_key", "ot_baggage_sd_routing_key"} {
		md := []string{key, "feat-1", "baggage", "foo=bar"}
		cases = append(cases,
			markerFormCase{name: key + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md, key: key, decision: audit.Stripped},
			markerFormCase{name: key + "/zero policy", md: md, key: key, decision: audit.Stripped},
			markerFormCase{name: key + "/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, md: md},
		)
	}
	runMarkerForms(t, cases)
}

// TestCompatKeyMetadataAlone: with a codec that reads Signadot's or
// Okteto's key as its own (propagation.WithSignadot, WithOkteto), metadata
// named as that key, or as it in Jaeger's or OpenTracing's header form
// (uberctx-sd-routing-key is what Signadot's own hops route by), names a
// sandbox by itself, as sandbox.id does: Codec.Read finds it unreadable on
// an HTTP request. From a trusted peer the call must fail with
// InvalidArgument, never be served as production with the key left in
// place for the next hop; from an untrusted one it is stripped.
func TestCompatKeyMetadataAlone(t *testing.T) {
	signadot, err := propagation.NewCodec(propagation.WithSignadot())
	if err != nil {
		t.Fatal(err)
	}
	okteto, err := propagation.NewCodec(propagation.WithOkteto())
	if err != nil {
		t.Fatal(err)
	}
	var cases []markerFormCase
	for _, cc := range []struct {
		codec *propagation.Codec
		key   string
	}{{signadot, propagation.SignadotKey}, {okteto, propagation.OktetoKey}} {
		for _, prefix := range []string{"", "uberctx-", "ot-baggage-"} {
			key := prefix + cc.key
			md := []string{key, "feat-1", "baggage", "foo=bar"}
			cases = append(cases,
				markerFormCase{name: key + "/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback), grpcmw.WithCodec(cc.codec)}, md: md, code: codes.InvalidArgument, decision: audit.Rejected},
				markerFormCase{name: key + "/trust all", opts: []grpcmw.ServerOption{grpcmw.TrustAll(), grpcmw.WithCodec(cc.codec)}, md: md, code: codes.InvalidArgument, decision: audit.Rejected},
				markerFormCase{name: key + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere), grpcmw.WithCodec(cc.codec)}, md: md, key: key, decision: audit.Stripped},
			)
		}
	}
	runMarkerForms(t, cases)
}

// TestKeyMetadataFormsBesideMarkers: beside a sandbox-id, metadata named
// as our actor, origin or ticket key in Jaeger's or OpenTracing's header
// form (uberctx-sandbox.actor, which their propagators read into baggage
// as sandbox.actor) is a marker, as the key as it is already was: a
// trusted peer's call is unreadable (Codec.Read rejects the same HTTP
// request), not admitted with a second actor riding along.
func TestKeyMetadataFormsBesideMarkers(t *testing.T) {
	var cases []markerFormCase
	for _, k := range []string{propagation.DefaultActorKey, propagation.DefaultOriginKey, propagation.DefaultTicketKey} {
		for _, prefix := range []string{"uberctx-", "ot-baggage-"} {
			key := prefix + k
			md := []string{"sandbox-id", "feat-1", key, "mallory"}
			cases = append(cases,
				markerFormCase{name: key + "/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, md: md, code: codes.InvalidArgument, decision: audit.Rejected},
				markerFormCase{name: key + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md, key: key, decision: audit.Stripped},
			)
		}
	}
	runMarkerForms(t, cases)
}

// TestForeignKeysBesideBaggageThatMentionsOurs: baggage holding a '%' or
// the text of our key prefix ("foo=sandbox.idea") is read in full, since
// it may hide a member of ours. When it holds none, the call has no marker
// of ours; an untrusted peer's other tools' routing keys and underscore
// spellings on it must still be stripped and audited, as on a call whose
// baggage never looked like ours.
func TestForeignKeysBesideBaggageThatMentionsOurs(t *testing.T) {
	var cases []markerFormCase
	for _, bag := range []string{"foo=a%20b", "foo=sandbox.idea"} {
		for _, extra := range [][]string{
			{"uberctx-sd-routing-key", "x"},
			{"sandbox_id", "feat-1"},
		} {
			md := append([]string{"baggage", bag}, extra...)
			cases = append(cases,
				markerFormCase{name: bag + "/" + extra[0] + "/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md, key: extra[0], decision: audit.Stripped},
				markerFormCase{name: bag + "/" + extra[0] + "/trusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(loopback)}, md: md},
			)
		}
		md := []string{"baggage", bag + ",sd-routing-key=x"}
		cases = append(cases, markerFormCase{name: bag + "/sd-routing-key in baggage/untrusted peer", opts: []grpcmw.ServerOption{grpcmw.WithTrustedNetworks(elsewhere)}, md: md, decision: audit.Stripped})
	}
	runMarkerForms(t, cases)
}
