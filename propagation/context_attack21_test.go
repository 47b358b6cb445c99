package propagation_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestContextChainModel builds random chains of the contexts a request
// passes through (a sandbox set, masked, the standard library's wrappers,
// values of other keys, OpenTelemetry baggage) and checks after every link
// that FromContext sees exactly the sandbox the last set-or-mask says, and
// that every other key's value passes through: a context without a sandbox
// is never read as one, nor one with a sandbox as baseline.
func TestContextChainModel(t *testing.T) {
	type valKey struct{ n int }
	r := rand.New(rand.NewPCG(21, 21))
	for chain := range 2000 {
		ctx := context.Background()
		var want *propagation.Sandbox
		vals := map[valKey]int{}
		var cancels []context.CancelFunc
		for link := range 12 {
			switch r.IntN(8) {
			case 0, 1:
				s := propagation.Sandbox{ID: fmt.Sprintf("sb-%d-%d", chain, link), Actor: "a"}
				ctx = propagation.ContextWithSandbox(ctx, s)
				want = &s
			case 2:
				before := ctx
				ctx = propagation.ContextWithoutSandbox(ctx)
				if want == nil && ctx != before {
					t.Fatalf("chain %d: ContextWithoutSandbox wrapped a context without a sandbox", chain)
				}
				want = nil
			case 3:
				k := valKey{r.IntN(4)}
				ctx = context.WithValue(ctx, k, link)
				vals[k] = link
			case 4:
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				cancels = append(cancels, cancel)
			case 5:
				ctx = context.WithoutCancel(ctx)
			case 6:
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Hour))
				cancels = append(cancels, cancel)
				stop := context.AfterFunc(ctx, func() {})
				defer stop()
			case 7:
				m, _ := baggage.NewMember("k", fmt.Sprint(link))
				b, _ := baggage.New(m)
				ctx = baggage.ContextWithBaggage(ctx, b)
			}
			got, ok := propagation.FromContext(ctx)
			switch {
			case want == nil && ok:
				t.Fatalf("chain %d link %d: sandbox %+v in a context without one (%v)", chain, link, got, ctx)
			case want != nil && (!ok || got != *want):
				t.Fatalf("chain %d link %d: FromContext = %+v, %v; want %+v (%v)", chain, link, got, ok, *want, ctx)
			}
			for k, v := range vals {
				if got := ctx.Value(k); got != v {
					t.Fatalf("chain %d link %d: Value(%v) = %v, want %d", chain, link, k, got, v)
				}
			}
		}
		for _, c := range cancels {
			c()
		}
	}
}

// TestContextWithoutSandboxKeepsDone: the mask passes cancellation and
// deadlines of its parent through, as a sandbox context does.
func TestContextWithoutSandboxKeepsDone(t *testing.T) {
	parent, cancel := context.WithCancel(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1"}))
	masked := propagation.ContextWithoutSandbox(parent)
	child, cancelChild := context.WithCancel(masked)
	defer cancelChild()
	fired := make(chan struct{})
	context.AfterFunc(masked, func() { close(fired) })
	cancel()
	<-child.Done()
	<-fired
	if masked.Err() != context.Canceled {
		t.Fatalf("masked.Err() = %v, want Canceled", masked.Err())
	}
	if _, ok := propagation.FromContext(child); ok {
		t.Fatal("sandbox visible below a mask, through WithCancel")
	}
}

// TestMaskLeavesBaggageStripDoesNot pins what ContextWithoutSandbox's doc
// says: with WithBaggageMirror the mask hides the sandbox from FromContext
// but the mirrored baggage still names it to the next hop, and
// Codec.StripContext is what removes both.
func TestMaskLeavesBaggageStripDoesNot(t *testing.T) {
	c, err := propagation.NewCodec(propagation.WithBaggageMirror())
	if err != nil {
		t.Fatal(err)
	}
	p := propagation.NewTextMapPropagator(c)
	ctx := c.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1"})
	nextHop := func(ctx context.Context) (propagation.Sandbox, bool) {
		carrier := otelprop.MapCarrier{}
		p.Inject(ctx, carrier)
		return propagation.FromContext(p.Extract(context.Background(), carrier))
	}
	masked := propagation.ContextWithoutSandbox(ctx)
	if _, ok := propagation.FromContext(masked); ok {
		t.Fatal("sandbox visible through ContextWithoutSandbox")
	}
	if s, ok := nextHop(masked); !ok || s.ID != "pr-1" {
		t.Fatalf("next hop of a masked, mirrored context reads %+v, %v; the doc says the baggage still names pr-1", s, ok)
	}
	stripped := c.StripContext(ctx)
	if _, ok := propagation.FromContext(stripped); ok {
		t.Fatal("sandbox visible through StripContext")
	}
	if s, ok := nextHop(stripped); ok {
		t.Fatalf("next hop of a stripped context reads sandbox %+v", s)
	}
}

// TestNilParent: ContextWithSandbox panics at once on a nil parent, as
// context.WithValue does, instead of returning a context that panics
// later in Done or in a lookup of another key.
func TestNilParent(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("ContextWithSandbox(nil, s) did not panic")
		}
	}()
	//lint:ignore SA1012 the nil parent is the point
	ctx := propagation.ContextWithSandbox(nil, propagation.Sandbox{ID: "pr-1"}) //nolint:staticcheck
	t.Logf("returned %v", ctx)
}
