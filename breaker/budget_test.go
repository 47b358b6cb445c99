package breaker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestRateLimit: the token bucket on the fake clock admits exactly burst +
// rate*elapsed calls, reports the exact wait, and refused calls use no
// tokens.
func TestRateLimit(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 10, Burst: 2}}, breaker.WithClock(clk.Now))
	ctx := sandboxCtx("pr-10")
	for i := range 2 {
		if err := call(g, ctx, nil); err != nil {
			t.Fatalf("call %d within burst refused: %v", i, err)
		}
	}
	wantRefusal(t, call(g, ctx, nil), breaker.ErrThrottled, 100*time.Millisecond)
	clk.Advance(40 * time.Millisecond)
	wantRefusal(t, call(g, ctx, nil), breaker.ErrThrottled, 60*time.Millisecond)
	clk.Advance(60 * time.Millisecond)
	if err := call(g, ctx, nil); err != nil {
		t.Fatalf("token due, but refused: %v", err)
	}

	// 10 s of calls every millisecond (100x the budget): exactly
	// 100 admitted, whatever the refusals.
	admitted := 0
	for range 10_000 {
		clk.Advance(time.Millisecond)
		if call(g, ctx, nil) == nil {
			admitted++
		}
	}
	if admitted != 100 {
		t.Fatalf("admitted %d calls in 10s at rate 10, want 100", admitted)
	}
}

// TestMaxInFlight: the cap counts admitted calls until their done, and a
// call refused for it uses no token.
func TestMaxInFlight(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1, Burst: 3, MaxInFlight: 2}}, breaker.WithClock(clk.Now))
	ctx := sandboxCtx("pr-11")
	d1, err1 := g.Allow(ctx)
	d2, err2 := g.Allow(ctx)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	for range 5 {
		wantRefusal(t, call(g, ctx, nil), breaker.ErrTooManyInFlight, breaker.BusyRetryAfter)
	}
	d1(nil)
	// The third token is still there.
	d3, err := g.Allow(ctx)
	if err != nil {
		t.Fatalf("slot free and a token left, but refused: %v", err)
	}
	d2(nil)
	d3(nil)
	wantRefusal(t, call(g, ctx, nil), breaker.ErrThrottled, time.Second)
}

// TestIsolation: a runaway sandbox that exhausts its rate and opens its
// breaker leaves another sandbox and baseline traffic alone.
func TestIsolation(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 5, Burst: 5}, Failures: 3}, breaker.WithClock(clk.Now))
	runaway, calm := sandboxCtx("runaway"), sandboxCtx("calm")
	refused := 0
	for range 100 {
		if call(g, runaway, errBoom) != nil {
			refused++
		}
	}
	if refused != 97 || g.State("runaway") != breaker.StateOpen {
		t.Fatalf("runaway: %d refused, state %v; want 97 refused (3 failures open it), open", refused, g.State("runaway"))
	}
	for i := range 5 {
		if err := call(g, calm, nil); err != nil {
			t.Fatalf("calm call %d refused: %v", i, err)
		}
	}
	for i := range 10_000 {
		if err := call(g, context.Background(), errBoom); err != nil {
			t.Fatalf("baseline call %d refused: %v", i, err)
		}
	}
	if n := g.Len(); n != 2 {
		t.Fatalf("group holds %d keys, want 2 (baseline has no budget)", n)
	}
}

// TestBaselineBudget: with Settings.Baseline, baseline traffic has a budget
// and a breaker of its own, apart from the sandboxes'.
func TestBaselineBudget(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{Baseline: &breaker.Budget{Rate: 1, Burst: 2}, Failures: 2}, breaker.WithClock(clk.Now))
	base := context.Background()
	call(g, base, nil)
	call(g, base, nil)
	wantRefusal(t, call(g, base, nil), breaker.ErrThrottled, time.Second)
	if err := call(g, sandboxCtx("pr-12"), nil); err != nil {
		t.Fatalf("sandbox refused because of baseline's budget: %v", err)
	}
	clk.Advance(2 * time.Second)
	call(g, base, errBoom)
	call(g, base, errBoom)
	if g.State("") != breaker.StateOpen || g.State("pr-12") != breaker.StateClosed {
		t.Fatalf("baseline %v, sandbox %v; want open, closed", g.State(""), g.State("pr-12"))
	}
}

// TestOverrides: a sandbox's budget comes from the defaults, its route
// table entry and Settings.Override, field by field, and follows changes of
// the table.
func TestOverrides(t *testing.T) {
	clk := clocktest.New()
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "from-table", Budget: &routes.Budget{Rate: 1, Burst: 5}},
		{ID: "both", Budget: &routes.Budget{Burst: 7}},
	}, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	g := breaker.NewGroup(breaker.Settings{
		Budget: breaker.Budget{Rate: 1, Burst: 1, MaxInFlight: 100},
		Override: func(id string) (breaker.Budget, bool) {
			switch id {
			case "from-func":
				return breaker.Budget{Burst: 3}, true
			case "both":
				return breaker.Budget{Burst: 4}, true
			}
			return breaker.Budget{}, false
		},
	}, breaker.WithClock(clk.Now), breaker.WithRoutes(table))

	burst := func(id string) int {
		ctx := sandboxCtx(id)
		n := 0
		for call(g, ctx, nil) == nil {
			n++
		}
		return n
	}
	for id, want := range map[string]int{"plain": 1, "from-table": 5, "from-func": 3, "both": 4} {
		if got := burst(id); got != want {
			t.Errorf("%s: burst %d, want %d", id, got, want)
		}
	}

	// The table changes: from-table gets a cap of 1 call in flight and a
	// burst of 10; the change applies at its next call and keeps its
	// (empty) bucket.
	if err := table.Update([]routes.Sandbox{{ID: "from-table", Budget: &routes.Budget{Rate: 1, Burst: 10, MaxInFlight: 1}}}); err != nil {
		t.Fatal(err)
	}
	ctx := sandboxCtx("from-table")
	wantRefusal(t, call(g, ctx, nil), breaker.ErrThrottled, time.Second)
	clk.Advance(2 * time.Second)
	held, err := g.Allow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, call(g, ctx, nil), breaker.ErrTooManyInFlight, breaker.BusyRetryAfter)
	held(nil)
	if err := call(g, ctx, nil); err != nil {
		t.Fatalf("second token refused: %v", err)
	}
	wantRefusal(t, call(g, ctx, nil), breaker.ErrThrottled, time.Second)
}

// TestZeroAllocs: baseline traffic without a budget and an admitted call of
// a warm sandbox key (rate limit, cap and breaker all in use) allocate
// nothing, Allow and done together.
func TestZeroAllocs(t *testing.T) {
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1000}},
		breaker.WithMeterProvider(noop.NewMeterProvider()))
	for name, ctx := range map[string]context.Context{
		"baseline": context.Background(),
		"sandbox":  propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-13", Actor: "alice"}),
	} {
		call(g, ctx, nil) // warm
		if a := testing.AllocsPerRun(1000, func() {
			done, err := g.Allow(ctx)
			if err != nil {
				t.Fatal(err)
			}
			done(nil)
		}); a != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, a)
		}
	}
	// Baseline traffic with a budget of its own: no allocation either.
	gb := breaker.NewGroup(breaker.Settings{Baseline: &breaker.Budget{Rate: 1e12, Burst: 1 << 30, MaxInFlight: 1000}},
		breaker.WithMeterProvider(noop.NewMeterProvider()))
	call(gb, context.Background(), nil)
	if a := testing.AllocsPerRun(1000, func() { call(gb, context.Background(), nil) }); a != 0 {
		t.Errorf("baseline with a budget: %v allocations per call, want 0", a)
	}
	if gb.Len() != 1 {
		t.Errorf("baseline with a budget: %d keys, want 1", gb.Len())
	}
	// A failure in the closed state goes through gobreaker's Execute; it
	// does not allocate either.
	ctx := sandboxCtx("pr-14")
	call(g, ctx, nil)
	if a := testing.AllocsPerRun(1000, func() {
		call(g, ctx, errBoom)
		call(g, ctx, nil)
	}); a != 0 {
		t.Errorf("failure and success: %v allocations, want 0", a)
	}
}

// TestConcurrent hammers a few keys from many goroutines, with failures,
// cancellations and evictions going on, and checks that the cap on calls in
// flight is never exceeded and that everything is released at the end.
func TestConcurrent(t *testing.T) {
	clk := clocktest.New()
	const maxInFlight = 3
	g := breaker.NewGroup(breaker.Settings{
		Budget:      breaker.Budget{MaxInFlight: maxInFlight},
		Failures:    4,
		OpenTimeout: time.Millisecond,
		IdleTimeout: time.Millisecond,
	}, breaker.WithClock(clk.Now))
	ids := []string{"a", "b", "c"}
	var inFlight [3]atomic.Int32
	var worst atomic.Int32
	var admittedCalls atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 3000 {
				k := (w + i) % len(ids)
				done, err := g.Allow(sandboxCtx(ids[k]))
				if err != nil {
					if !errors.Is(err, breaker.ErrOpen) && !errors.Is(err, breaker.ErrTooManyInFlight) {
						t.Errorf("unexpected refusal %v", err)
					}
					continue
				}
				admittedCalls.Add(1)
				n := inFlight[k].Add(1)
				for {
					m := worst.Load()
					if n <= m || worst.CompareAndSwap(m, n) {
						break
					}
				}
				var outcome error
				switch i % 5 {
				case 0:
					outcome = errBoom
				case 1:
					outcome = context.Canceled
				}
				if i%7 == 0 {
					clk.Advance(100 * time.Microsecond)
				}
				inFlight[k].Add(-1)
				done(outcome)
			}
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 200 {
			g.Sweep()
		}
	}()
	wg.Wait()
	if w := worst.Load(); w > maxInFlight || w == 0 {
		t.Fatalf("worst calls in flight on one key %d, want 1..%d", w, maxInFlight)
	}
	if admittedCalls.Load() == 0 {
		t.Fatal("no call admitted")
	}
	// Nothing is left in flight: every key can be evicted.
	clk.Advance(time.Second)
	g.Sweep()
	if n := g.Len(); n != 0 {
		t.Fatalf("%d keys left after the last sweep, want 0", n)
	}
}
