package breaker_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestEvictionMemory sends 100,000 distinct sandboxes through a group, lets
// them go idle, and shows that the next call evicts them: the group's size
// returns to the one key in use and the heap they took is given back.
func TestEvictionMemory(t *testing.T) {
	const keys = 100_000
	clk := clocktest.New()
	before := heap()
	g := breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 100, MaxInFlight: 10}, IdleTimeout: time.Minute},
		breaker.WithClock(clk.Now))
	for i := range keys {
		ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: fmt.Sprintf("sb-%d", i)})
		if err := call(g, ctx, nil); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			clk.Advance(100 * time.Millisecond) // 10 s in all: less than IdleTimeout
		}
	}
	if n := g.Len(); n != keys {
		t.Fatalf("group holds %d keys, want %d", n, keys)
	}
	full := heap()

	// Idle for two minutes; then one sandbox calls.
	clk.Advance(2 * time.Minute)
	if err := call(g, sandboxCtx("calm"), nil); err != nil {
		t.Fatal(err)
	}
	if n := g.Len(); n != 1 {
		t.Fatalf("after idling, group holds %d keys, want 1 (the caller)", n)
	}
	after := heap()
	grown, left := int64(full)-int64(before), int64(after)-int64(before)
	t.Logf("heap: %d keys took %d bytes (%d per key); after eviction %d bytes are left", keys, grown, grown/keys, left)
	if left > grown/20 {
		t.Fatalf("after eviction %d bytes of %d are still held, want at most 5%%", left, grown)
	}
	runtime.KeepAlive(g)
}

// TestEvictionRules: keys go only after IdleTimeout without calls, never
// with a call in flight or while their breaker is open, and steady traffic
// sweeps them without calls to Sweep.
func TestEvictionRules(t *testing.T) {
	clk := clocktest.New()
	g := breaker.NewGroup(breaker.Settings{IdleTimeout: time.Minute, OpenTimeout: 5 * time.Minute, Failures: 1},
		breaker.WithClock(clk.Now))

	for i := range 1000 {
		call(g, sandboxCtx(fmt.Sprintf("short-%d", i)), nil)
	}
	busy, err := g.Allow(sandboxCtx("busy"))
	if err != nil {
		t.Fatal(err)
	}
	call(g, sandboxCtx("broken"), errBoom) // opens for 5 minutes

	// Steady traffic of one sandbox, one call every second: keys are not
	// evicted before a minute has passed, and all idle ones within two.
	calm := sandboxCtx("calm")
	for s := 1; s <= 120; s++ {
		clk.Advance(time.Second)
		call(g, calm, nil)
		if s == 59 && g.Len() != 1003 {
			t.Fatalf("after %ds, group holds %d keys, want all 1003", s, g.Len())
		}
	}
	if n := g.Len(); n != 3 {
		t.Fatalf("after 2 minutes of steady traffic, group holds %d keys, want 3 (calm, busy, broken)", n)
	}
	if g.State("broken") != breaker.StateOpen {
		t.Fatalf("broken: %v, want still open", g.State("broken"))
	}

	busy(nil)
	if n := g.Sweep(); n != 1 {
		t.Fatalf("Sweep evicted %d keys, want 1 (busy, done and idle)", n)
	}
	clk.Advance(3 * time.Minute) // broken's open period is over
	if n := g.Sweep(); n != 2 {
		t.Fatalf("Sweep evicted %d keys, want 2 (broken, calm)", n)
	}
	// An evicted key starts afresh.
	if err := call(g, sandboxCtx("broken"), nil); err != nil {
		t.Fatalf("evicted key refused: %v", err)
	}
}
