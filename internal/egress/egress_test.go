package egress_test

import (
	"context"
	"errors"
	"testing"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/internal/egress"
	"github.com/sandboxkit/sandboxkit/propagation"
)

func TestZeroBudgetsNothing(t *testing.T) {
	var b egress.Budget
	if b.Active() || b.Covers(true) || b.Covers(false) {
		t.Fatal("zero Budget budgets")
	}
	b = egress.New(nil, nil, audit.HTTP)
	if b.Active() || b.Covers(true) {
		t.Fatal("nil group budgets")
	}
}

func TestCovers(t *testing.T) {
	b := egress.New(breaker.NewGroup(breaker.Settings{}), nil, audit.HTTP)
	if !b.Covers(true) || b.Covers(false) {
		t.Fatalf("sandbox-only group: Covers(true)=%v Covers(false)=%v", b.Covers(true), b.Covers(false))
	}
	b = egress.New(breaker.NewGroup(breaker.Settings{Baseline: &breaker.Budget{}}), nil, audit.HTTP)
	if !b.Covers(true) || !b.Covers(false) {
		t.Fatal("group with a baseline budget does not cover baseline traffic")
	}
}

func TestAllowRefusalIsAudited(t *testing.T) {
	rec, log := audittest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{MaxInFlight: 1}})
	b := egress.New(g, log, audit.Kafka)
	s := propagation.Sandbox{ID: "pr-1", Actor: "alice"}
	ctx := context.Background()

	done, err := b.Allow(ctx, s, "orders", func() string { t.Error("peer asked for an admitted call"); return "" })
	if err != nil {
		t.Fatal(err)
	}
	peerAsked := 0
	if _, err := b.Allow(ctx, s, "orders", func() string { peerAsked++; return "10.0.0.1:9" }); !errors.Is(err, breaker.ErrTooManyInFlight) {
		t.Fatalf("second call: err = %v, want ErrTooManyInFlight", err)
	}
	done(nil)
	if _, err := b.Allow(ctx, s, "orders", nil); err != nil {
		t.Fatalf("after done: %v", err)
	}
	if peerAsked != 1 {
		t.Errorf("peer asked %d times, want 1", peerAsked)
	}
	recs := rec.Records()
	if len(recs) != 1 {
		t.Fatalf("records = %v, want one", recs)
	}
	want := map[string]string{
		pub.KeyDecision: string(pub.Throttled), pub.KeyID: "pr-1", pub.KeyActor: "alice",
		pub.KeyProtocol: pub.Kafka, pub.KeyPeer: "10.0.0.1:9", pub.KeyTarget: "orders",
	}
	for k, v := range want {
		if recs[0][k] != v {
			t.Errorf("record[%s] = %q, want %q", k, recs[0][k], v)
		}
	}
	if recs[0][pub.KeyReason] == "" {
		t.Error("no reason")
	}
}

// The zero Budget "budgets nothing": asked about a call anyway (an
// adapter that forgets Covers), it admitted nothing and panicked on its
// nil group instead, which took the caller's request or write down.
func TestZeroBudgetAllowsWithoutPanicking(t *testing.T) {
	rec, log := audittest.New()
	for _, b := range []egress.Budget{{}, egress.New(nil, log, audit.HTTP)} {
		for _, s := range []propagation.Sandbox{{}, {ID: "pr-1"}} {
			done, err := b.Allow(context.Background(), s, "orders", nil)
			if err != nil || done == nil {
				t.Fatalf("zero budget, sandbox %q: done %v, err %v; want admitted", s.ID, done != nil, err)
			}
			done(errors.New("failed")) // counts for nothing, anywhere
		}
	}
	if recs := rec.Records(); len(recs) != 0 {
		t.Errorf("records %v; want none", recs)
	}
}
