package ingress_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	otelprop "go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/internal/ingress"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

var alice = propagation.Sandbox{ID: "pr-1", Actor: "alice"}

func TestAdmit(t *testing.T) {
	key := propagation.Key{ID: "k", Secret: []byte(strings.Repeat("s", 32))}
	signer, _ := propagation.NewSigner(key)
	verifier, _ := propagation.NewVerifier(key)
	ticket, err := signer.SignUntil(alice, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		verifier   *propagation.Verifier
		ticket     string
		wantReason string
		wantKey    string // the record's ticket.key: the admitting ticket's key ID
	}{
		{"by peer", nil, "", pub.ReasonTrustedSource, ""},
		{"ticket without verifier is the peer's", nil, ticket, pub.ReasonTrustedSource, ""},
		{"by ticket", verifier, ticket, pub.ReasonValidTicket, "k"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec, log := audittest.New()
			sr := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
			defer tp.Shutdown(context.Background())
			ctx, span := tp.Tracer("t").Start(context.Background(), "req")

			g := ingress.Gate{Codec: propagation.Default(), Logger: log, Protocol: audit.HTTP, Policy: trust.Policy{Verifier: tt.verifier}}
			m := propagation.Markers{Found: true, Sandbox: alice, Ticket: tt.ticket}
			out := g.Admit(ctx, &m, "10.0.0.1:5", "svc")
			span.End()

			if s, ok := propagation.FromContext(out); !ok || s != alice {
				t.Fatalf("context sandbox = %v, %v; want %v", s, ok, alice)
			}
			recs := rec.Records()
			if len(recs) != 1 {
				t.Fatalf("records = %v, want one", recs)
			}
			want := map[string]string{
				pub.KeyDecision: string(pub.Admitted), pub.KeyID: alice.ID, pub.KeyActor: alice.Actor,
				pub.KeyProtocol: pub.HTTP, pub.KeyPeer: "10.0.0.1:5", pub.KeyTarget: "svc", pub.KeyReason: tt.wantReason,
			}
			for k, v := range want {
				if recs[0][k] != v {
					t.Errorf("record[%s] = %q, want %q", k, recs[0][k], v)
				}
			}
			if got, ok := recs[0][pub.KeyTicketKey]; got != tt.wantKey || ok != (tt.wantKey != "") {
				t.Errorf("record[%s] = %q (present %v), want %q", pub.KeyTicketKey, got, ok, tt.wantKey)
			}
			spans := sr.Ended()
			if len(spans) != 1 {
				t.Fatalf("spans = %d", len(spans))
			}
			got := map[string]string{}
			for _, kv := range spans[0].Attributes() {
				got[string(kv.Key)] = kv.Value.AsString()
			}
			if got[pub.KeyID] != alice.ID || got[pub.KeyActor] != alice.Actor {
				t.Errorf("span attributes = %v", got)
			}
		})
	}
}

func TestDecideExplains(t *testing.T) {
	g := ingress.Gate{Codec: propagation.Default()}
	m := propagation.Markers{Found: true, Sandbox: alice}
	if v, why := g.Decide(&m, nil, false); v != trust.Strip || !errors.Is(why, trust.ErrUntrusted) {
		t.Fatalf("untrusted: %v, %v", v, why)
	}
	if v, why := g.Decide(&m, nil, true); v != trust.Admit || why != nil {
		t.Fatalf("trusted: %v, %v", v, why)
	}
	if v, why := g.Decide(&m, propagation.ErrInvalidID, true); v != trust.Reject || !errors.Is(why, propagation.ErrInvalidID) {
		t.Fatalf("unreadable: %v, %v", v, why)
	}
}

func TestRefuse(t *testing.T) {
	rec, log := audittest.New()
	g := ingress.Gate{Codec: propagation.Default(), Logger: log, Protocol: audit.GRPC}
	long := propagation.Sandbox{ID: strings.Repeat("x", 500), Actor: "eve"}
	g.Refuse(context.Background(), audit.Stripped, long, "10.9.9.9:1", "/svc.M/Call", trust.ErrUntrusted, func() string { return "peer 10.9.9.9:1 is not in a trusted network" })
	g.Refuse(context.Background(), audit.Rejected, alice, "", "", propagation.ErrInvalidID, func() string { return "" })
	recs := rec.Records()
	if len(recs) != 2 {
		t.Fatalf("records = %v", recs)
	}
	if got, want := recs[0][pub.KeyID], strings.Repeat("x", pub.MaxValueLen)+"..."; got != want {
		t.Errorf("clipped id = %q (%d bytes), want %d bytes", got, len(got), len(want))
	}
	if got, want := recs[0][pub.KeyReason], pub.ReasonUntrusted+": peer 10.9.9.9:1 is not in a trusted network"; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	if recs[0][pub.KeyDecision] != string(pub.Stripped) || recs[0]["level"] != "WARN" || recs[0][pub.KeyProtocol] != pub.GRPC {
		t.Errorf("record = %v", recs[0])
	}
	if got, want := recs[1][pub.KeyReason], propagation.ErrInvalidID.Error(); got != want {
		t.Errorf("reason without detail = %q, want %q", got, want)
	}
	if recs[1][pub.KeyDecision] != string(pub.Rejected) {
		t.Errorf("record = %v", recs[1])
	}

	// Without a logger the detail is never formatted.
	silent := ingress.Gate{Codec: propagation.Default()}
	silent.Refuse(context.Background(), audit.Stripped, alice, "", "", trust.ErrUntrusted, func() string {
		t.Error("detail called without a logger")
		return ""
	})
}

func TestStrip(t *testing.T) {
	codec := propagation.Default()
	g := ingress.Gate{Codec: codec}
	h := otelprop.MapCarrier{}
	codec.InjectSandbox(alice, h)
	if len(h) == 0 {
		t.Fatal("nothing injected")
	}
	ctx := g.Strip(codec.ContextWithSandbox(context.Background(), alice), h)
	if _, ok := propagation.FromContext(ctx); ok {
		t.Error("sandbox left in the context")
	}
	if m, _ := codec.Read(h); m.Found {
		t.Errorf("markers left in the carrier: %v", h)
	}
}

func TestEnterNoLogger(t *testing.T) {
	g := ingress.Gate{Codec: propagation.Default()}
	m := propagation.Markers{Found: true, Sandbox: alice}
	ctx := g.Admit(context.Background(), &m, "", "")
	if s, ok := propagation.FromContext(ctx); !ok || s != alice {
		t.Fatalf("sandbox = %v, %v", s, ok)
	}
	// Record without a logger is silent and does not panic.
	g.Record(ctx, audit.Event{Decision: audit.Routed})
}
