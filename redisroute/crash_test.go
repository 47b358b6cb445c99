package redisroute_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/redisroute"
)

// TestInterruptedClaimLeavesForeignDataAlone: the server goes away at
// every step of a claim in turn (a proxy stops forwarding from command k
// on) and comes back. A database holding somebody else's keys without a
// marker is never given to the sandbox, never marked as the sandbox's,
// and Destroy of the sandbox does not flush it.
func TestInterruptedClaimLeavesForeignDataAlone(t *testing.T) {
	server(t)
	ctx := context.Background()
	db := sandboxLast
	foreign := raw(t, db)
	if n := foreign.DBSize(ctx).Val(); n != 0 {
		t.Skipf("database %d is in use", db)
	}
	foreign.Set(ctx, "rrt:someone-elses", "v", 0)
	t.Cleanup(func() { foreign.Del(ctx, "rrt:someone-elses") })

	for k := int64(1); ; k++ {
		p := newProxy(t)
		c := redis.NewClient(&redis.Options{Addr: p.addr(), DB: baseDB, MaxRetries: 1})
		r, err := redisroute.New(c, redisroute.Databases{First: db, Last: db})
		if err != nil {
			t.Fatal(err)
		}
		id := newID()
		p.cutFrom.Store(k)
		first := c.Set(sandboxCtx(id), "k", "v", 0).Err()
		p.cutFrom.Store(0)
		again := c.Set(sandboxCtx(id), "k", "v", 0).Err()
		if !errors.Is(again, redisroute.ErrNoSandboxDatabase) {
			t.Errorf("cut at command %d (first try: %v): retry = %v, want ErrNoSandboxDatabase", k, first, again)
		}
		if owner := foreign.Get(ctx, redisroute.MarkerKey).Val(); owner != "" {
			t.Errorf("cut at command %d: the foreign database is marked as %q's", k, owner)
		}
		if err := r.Destroy(ctx, id); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		if v := foreign.Get(ctx, "rrt:someone-elses").Val(); v != "v" {
			t.Fatalf("cut at command %d: the foreign key is %q after Destroy, want it kept", k, v)
		}
		foreign.Del(ctx, redisroute.MarkerKey)
		r.Close()
		c.Close()
		if first != nil && !errors.Is(first, redisroute.ErrNoSandboxDatabase) {
			continue // the cut hit the claim: try the next step
		}
		if k == 1 {
			t.Fatal("no command was cut")
		}
		break // the claim ran to its end before command k
	}
}
