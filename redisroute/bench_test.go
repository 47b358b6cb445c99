package redisroute_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/redisroute"
)

// BenchmarkBaselineCommand: one GET without a sandbox, on the real server,
// through a bare client, a routed client and a guarded client, in the same
// run (sub-benchmarks of one benchmark, so run with -count and compare
// them side by side).
func BenchmarkBaselineCommand(b *testing.B) {
	ctx := context.Background()
	bare, p := baseline(b)
	routed := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB})
	defer routed.Close()
	r, err := redisroute.New(routed, dbs)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	guarded := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB})
	defer guarded.Close()
	if err := redisroute.Guard(guarded); err != nil {
		b.Fatal(err)
	}
	bare.Set(ctx, p+"k", "v", 0)
	for _, c := range []struct {
		name   string
		client *redis.Client
	}{{"bare", bare}, {"routed", routed}, {"guarded", guarded}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.client.Get(ctx, p+"k").Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHookCost: the cost of the hooks alone, in process: a command
// sent to a no-op next, bare and through the router's and the guard's
// process and pipeline hooks, without a sandbox.
func BenchmarkHookCost(b *testing.B) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB}) // never dials
	defer c.Close()
	r, err := redisroute.New(c, dbs)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	cmd := redis.NewStringCmd(ctx, "get", "k")
	cmds := []redis.Cmder{cmd, cmd}
	next := func(context.Context, redis.Cmder) error { return nil }
	nextPipe := func(context.Context, []redis.Cmder) error { return nil }
	b.Run("process/bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = next(ctx, cmd)
		}
	})
	for _, h := range []struct {
		name string
		hook redis.Hook
	}{{"route", redisroute.RouteHooks(r)}, {"guard", redisroute.GuardHooks()}} {
		process := h.hook.ProcessHook(next)
		pipeline := h.hook.ProcessPipelineHook(nextPipe)
		b.Run("process/"+h.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = process(ctx, cmd)
			}
		})
		b.Run("pipeline/"+h.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = pipeline(ctx, cmds)
			}
		})
	}
}

// TestBaselineHooksDoNotAllocate: the router's and the guard's hooks cost
// no allocation for a command without a sandbox.
func TestBaselineHooksDoNotAllocate(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB})
	defer c.Close()
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// GET skips the router's range check; HSET runs its name tests; SELECT
	// of the baseline's own database reads (and freezes) its argument, in a
	// copy of its arguments that the router gives it: one allocation for
	// the process hook, one for the pipeline hook, the router's only
	// (SELECT, SWAPDB, MOVE and COPY pay it; the guard checks no range).
	for _, c := range []struct {
		cmd    redis.Cmder
		routed float64
	}{
		{redis.NewStringCmd(ctx, "get", "k"), 0},
		{redis.NewIntCmd(ctx, "hset", "k", "f", "v"), 0},
		{redis.NewStatusCmd(ctx, "select", baseDB), 2},
	} {
		cmd := c.cmd
		cmds := []redis.Cmder{cmd}
		for i, h := range []redis.Hook{redisroute.RouteHooks(r), redisroute.GuardHooks()} {
			want := c.routed
			if i == 1 {
				want = 0
			}
			process := h.ProcessHook(func(context.Context, redis.Cmder) error { return nil })
			pipeline := h.ProcessPipelineHook(func(context.Context, []redis.Cmder) error { return nil })
			if n := testing.AllocsPerRun(1000, func() { _ = process(ctx, cmd); _ = pipeline(ctx, cmds) }); n != want {
				t.Errorf("%T, %s: %.1f allocations per baseline command through both hooks, want %.0f", h, cmd.Name(), n, want)
			}
		}
	}
}

// BenchmarkSandboxPath: what the sandbox path pays to find out whether it
// runs on a go-redis full-duplex engine's goroutine (runtime.Callers and a
// lookup a frame, sandbox traffic only), beside a whole routed sandbox
// command on loopback.
func BenchmarkSandboxPath(b *testing.B) {
	b.Run("fullduplex-check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if redisroute.FullDuplexPlace() != 0 {
				b.Fatal("not on a full-duplex engine")
			}
		}
	})
	b.Run("routed-set", func(b *testing.B) {
		id := newID()
		c, p, _ := route(b, []string{id})
		sctx := sandboxCtx(id)
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Set(sctx, p+"k", "v", 0).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
