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

// evictionKeys is how many sandboxes TestEvictionAtScale and
// BenchmarkEvictionMemory send through a group.
const evictionKeys = 100_000

// manySandboxes returns the contexts of n distinct sandboxes.
func manySandboxes(n int) []context.Context {
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		ctxs[i] = propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: fmt.Sprintf("sb-%d", i)})
	}
	return ctxs
}

// newEvictionGroup returns a group with an IdleTimeout of a minute on clk.
func newEvictionGroup(clk *clocktest.Clock) *breaker.Group {
	return breaker.NewGroup(breaker.Settings{Budget: breaker.Budget{Rate: 100, MaxInFlight: 10}, IdleTimeout: time.Minute},
		breaker.WithClock(clk.Now))
}

// callEach makes one call of every sandbox in ctxs through g, the clock
// moving 100 ms every 1000 calls: for evictionKeys, 10 s in all, less than
// the group's IdleTimeout, so that none is evicted on the way.
func callEach(tb testing.TB, g *breaker.Group, clk *clocktest.Clock, ctxs []context.Context) {
	tb.Helper()
	for i, ctx := range ctxs {
		if err := call(g, ctx, nil); err != nil {
			tb.Fatal(err)
		}
		if i%1000 == 0 {
			clk.Advance(100 * time.Millisecond)
		}
	}
}

// sweepBound is the most keys one call may look at for eviction: a timed
// sweep step (32) and the step of a call that creates a key (2).
const sweepBound = 32 + 2

// evictIdle lets every key of g go idle for two minutes, then one sandbox
// calls steadily, every 10 ms for two more minutes; the group's sweep
// steps evict the idle keys on the way, a few per call.
func evictIdle(tb testing.TB, g *breaker.Group, clk *clocktest.Clock) {
	tb.Helper()
	clk.Advance(2 * time.Minute)
	for range 12_000 {
		if err := call(g, sandboxCtx("calm"), nil); err != nil {
			tb.Fatal(err)
		}
		clk.Advance(10 * time.Millisecond)
	}
}

// TestEvictionAtScale sends 100,000 distinct sandboxes through a group and
// lets them go idle. The next call evicts no more than sweepBound of them
// (no request pays for the eviction of the others), and steady traffic
// evicts them all within two IdleTimeouts: the group's size returns to the
// one key in use. What the evicted keys leave on the heap is measured by
// BenchmarkEvictionMemory.
func TestEvictionAtScale(t *testing.T) {
	clk := clocktest.New()
	g := newEvictionGroup(clk)
	callEach(t, g, clk, manySandboxes(evictionKeys))
	if n := g.Len(); n != evictionKeys {
		t.Fatalf("group holds %d keys, want %d", n, evictionKeys)
	}
	clk.Advance(2 * time.Minute)
	if err := call(g, sandboxCtx("first"), nil); err != nil {
		t.Fatal(err)
	}
	if n := g.Len(); n < evictionKeys+1-sweepBound {
		t.Fatalf("the first call after idling left %d keys: it evicted %d, want at most %d",
			n, evictionKeys+1-n, sweepBound)
	}
	evictIdle(t, g, clk)
	if n := g.Len(); n != 1 {
		t.Fatalf("after two minutes of steady traffic, group holds %d keys, want 1 (the caller)", n)
	}
}

// BenchmarkEvictionMemory measures the heap the keys of evictionKeys
// sandboxes take and how much of it their eviction gives back. One op does
// what TestEvictionAtScale does: it makes a group, calls it once from each
// sandbox, lets them go idle and evicts them. Against the heap before the
// group was made, and after a full GC each time, it reports the bytes per
// key the group held with all keys in it (held-B/key) and still holds after
// their eviction (retained-B/key). B/op and allocs/op are those of the
// whole op; the heap measurements are left out of the timing.
//
// retained-B/key should be about 0. The heap of the whole process is
// measured, so what comes and goes elsewhere in it makes a few B/key of
// noise either way. A group that kept the evicted entries would retain all
// of held-B/key; one whose shard maps kept their size after the eviction
// (see sweepShard), about 30 B/key. Run it with
//
//	go test ./breaker -run '^$' -bench BenchmarkEvictionMemory -count 5
func BenchmarkEvictionMemory(b *testing.B) {
	ctxs := manySandboxes(evictionKeys)
	var rounds, held, retained int64
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		before := heap()
		b.StartTimer()
		clk := clocktest.New()
		g := newEvictionGroup(clk)
		callEach(b, g, clk, ctxs)
		b.StopTimer()
		full := heap()
		b.StartTimer()
		evictIdle(b, g, clk)
		b.StopTimer()
		after := heap()
		runtime.KeepAlive(g)
		b.StartTimer()
		rounds++
		held += int64(full) - int64(before)
		retained += int64(after) - int64(before)
	}
	keys := float64(rounds * evictionKeys)
	b.ReportMetric(float64(held)/keys, "held-B/key")
	b.ReportMetric(float64(retained)/keys, "retained-B/key")
}

// heap returns the bytes of live objects on the heap, after a full GC.
func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
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
