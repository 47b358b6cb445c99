package breaker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestSweepShrinksMaps: a Go map keeps its buckets when keys are deleted,
// so once most of a shard's keys are evicted the sweep moves the rest to a
// map of their size. (BenchmarkEvictionMemory shows the memory this
// returns.)
func TestSweepShrinksMaps(t *testing.T) {
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
	maps := make([]map[string]*entry, numShards)
	for i := range g.shards {
		maps[i] = g.shards[i].m
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
		if len(sh.m) != 0 || sh.peak != 0 {
			t.Errorf("shard %d: %d keys, peak %d: want the peak reset to what is left", i, len(sh.m), sh.peak)
		}
		if sameMap(sh.m, maps[i]) {
			t.Errorf("shard %d kept the map that held %d keys", i, 200)
		}
	}
	allow("new")
	if g.Len() != 1 {
		t.Errorf("%d keys after a new one, want 1", g.Len())
	}
}

// sameMap reports whether a and b are the same map, not equal ones.
func sameMap(a, b map[string]*entry) bool {
	return fmt.Sprintf("%p", a) == fmt.Sprintf("%p", b)
}
