package breaker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestSweepShrinksTables: a shard's table keeps its size when keys are
// removed, so once most of a shard's keys are evicted the sweep moves the
// rest to a table of their size. (BenchmarkEvictionMemory shows the memory
// this returns.)
func TestSweepShrinksTables(t *testing.T) {
	clk := clocktest.New()
	g := NewGroup(Settings{Budget: Budget{Rate: 100}, IdleTimeout: time.Minute}, WithClock(clk.Now))
	allow := func(id string) {
		done, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		done(nil)
	}
	for i := range numShards * 200 {
		allow(fmt.Sprintf("old-%d", i))
	}
	tabs := make([]*table, numShards)
	for i := range g.shards {
		tabs[i] = g.shards[i].tab.Load()
		if g.shards[i].peak < 64 {
			t.Fatalf("shard %d peaked at %d keys: too few for the test", i, g.shards[i].peak)
		}
	}
	clk.Advance(2 * time.Minute)
	if n := g.Sweep(); n != numShards*200 {
		t.Fatalf("swept %d keys, want %d", n, numShards*200)
	}
	for i := range g.shards {
		sh := &g.shards[i]
		if sh.n != 0 || sh.peak != 0 {
			t.Errorf("shard %d: %d keys, peak %d: want the peak reset to what is left", i, sh.n, sh.peak)
		}
		if tab := sh.tab.Load(); tab == tabs[i] || len(tab.slots) != minSlots {
			t.Errorf("shard %d: table of %d slots (the same: %v) after its %d keys went, want a new one of %d",
				i, len(tab.slots), tab == tabs[i], 200, minSlots)
		}
	}
	allow("new")
	if g.Len() != 1 {
		t.Errorf("%d keys after a new one, want 1", g.Len())
	}
}
