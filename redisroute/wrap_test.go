package redisroute_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/redisroute"
)

// Command types of the caller's that reach their go-redis command through
// an embedded interface, or through more wrappers than a short walk.
type (
	ifaceCmd struct{ redis.Cmder }
	anyCmder interface {
		redis.Cmder
		Name() string
	}
	ifaceCmd2 struct {
		tag string
		anyCmder
	}
	w1 struct{ *redis.StatusCmd }
	w2 struct{ *w1 }
	w3 struct{ *w2 }
	w4 struct{ *w3 }
	w5 struct{ *w4 }
	w6 struct{ *w5 }
	w7 struct{ *w6 }
	w8 struct{ *w7 }
)

func deepWrap(c *redis.StatusCmd) redis.Cmder {
	return &w8{&w7{&w6{&w5{&w4{&w3{&w2{&w1{c}}}}}}}}
}

// TestInterfaceWrappedCommandContextRead: a command type of the caller's
// may embed a redis.Cmder interface (a decorator of any command), or wrap
// one in many layers: the hooks read no context from either, so a
// sandbox's SET batched by an AutoPipeliner (context.Background()) ran in
// production through the router and the guard.
func TestInterfaceWrappedCommandContextRead(t *testing.T) {
	id := newID()
	c, p, _ := route(t, []string{id})
	g, gp := baseline(t)
	if err := redisroute.Guard(g); err != nil {
		t.Fatal(err)
	}
	ctx, sctx := context.Background(), sandboxCtx(id)
	for _, cl := range []struct {
		name   string
		c      *redis.Client
		prefix string
		want   error
	}{{"router", c, p, redisroute.ErrRefused}, {"guard", g, gp, redisroute.ErrSandboxOnBaseline}} {
		for _, w := range []struct {
			name string
			cmd  func(key string) redis.Cmder
		}{
			{"embedded Cmder", func(k string) redis.Cmder { return ifaceCmd{redis.NewStatusCmd(sctx, "set", k, "sandbox")} }},
			{"pointer, embedded Cmder", func(k string) redis.Cmder { return &ifaceCmd{redis.NewStatusCmd(sctx, "set", k, "sandbox")} }},
			{"embedded interface of its own", func(k string) redis.Cmder {
				return &ifaceCmd2{tag: "t", anyCmder: redis.NewStatusCmd(sctx, "set", k, "sandbox")}
			}},
			{"Cmder of a wrapper", func(k string) redis.Cmder {
				return ifaceCmd{&taggedCmd{redis.NewStatusCmd(sctx, "set", k, "sandbox")}}
			}},
			{"eight wrappers", func(k string) redis.Cmder { return deepWrap(redis.NewStatusCmd(sctx, "set", k, "sandbox")) }},
		} {
			ap, err := cl.c.AutoPipeline()
			if err != nil {
				t.Fatal(err)
			}
			key := cl.prefix + w.name
			cmd := w.cmd(key)
			if id2, ok := redisroute.CommandSandbox(cmd); !ok || id2 != id {
				t.Errorf("%s, %s: the command's sandbox reads as %q %v", cl.name, w.name, id2, ok)
			}
			if err := ap.Process(sctx, cmd); !errors.Is(err, cl.want) {
				t.Errorf("%s, %s: a sandbox's wrapped SET through the AutoPipeliner: %v, want %v", cl.name, w.name, err, cl.want)
			}
			if raw(t, baseDB).Exists(ctx, key).Val() != 0 {
				t.Errorf("%s, %s: a sandbox's wrapped SET reached production", cl.name, w.name)
			}
		}
	}
	wrapped := []redis.Cmder{
		ifaceCmd{redis.NewStatusCmd(sctx, "ping")},
		deepWrap(redis.NewStatusCmd(sctx, "ping")),
	}
	for _, w := range wrapped {
		if n := testing.AllocsPerRun(100, func() { redisroute.CommandSandbox(w) }); n != 0 {
			t.Errorf("%T: reading its context allocates %.1f times, want 0", w, n)
		}
	}
	if _, ok := redisroute.CommandSandbox(ifaceCmd{}); ok {
		t.Error("a wrapper with a nil Cmder reads as a sandbox's")
	}
	if _, ok := redisroute.CommandSandbox(ifaceCmd{redis.NewStatusCmd(ctx, "ping")}); ok {
		t.Error("a production wrapper reads as a sandbox's")
	}
	// Sent with the sandbox's context, a wrapper through an interface runs
	// in the sandbox's database (or is refused), never in production's.
	key := p + "direct"
	err := c.Process(sctx, ifaceCmd{redis.NewStatusCmd(sctx, "set", key, "sandbox")})
	if raw(t, baseDB).Exists(ctx, key).Val() != 0 {
		t.Errorf("a sandbox's SET wrapped in an interface, sent with its context, reached production (%v)", err)
	}
}

// TestSwappedCommandCannotPassTheCheck: go-redis writes the command the
// caller holds, reading its arguments when it writes; a caller that
// overwrote its command (*cmd = *other: go-redis's own command types) or
// swapped the command a wrapper of its holds (by pointer, or through an
// embedded redis.Cmder) between the policy's check and the write sent
// "SELECT <production's database>" after "SELECT <the sandbox's>" was
// checked, leaving the pooled sandbox connection in production's database.
// The policy checks, and go-redis writes, a private copy of go-redis's
// command; wrappers, whose command the copy would share, are refused for
// sandboxes.
func TestSwappedCommandCannotPassTheCheck(t *testing.T) {
	c, r, lim, p := flipClient(t, "after-select-pointer", "after-select-interface", "after-select-overwritten", "after-select-overwritten in a pipeline")
	ctx := context.Background()
	for _, how := range []string{"pointer", "interface", "overwritten", "overwritten in a pipeline"} {
		key := p + "after-select-" + how
		id := newID()
		t.Cleanup(func() { r.Destroy(ctx, id) })
		sctx := sandboxCtx(id)
		if err := c.Set(sctx, p+"before", "sandbox", 0).Err(); err != nil {
			t.Fatal(err)
		}
		db, err := r.Database(sctx)
		if err != nil {
			t.Fatal(err)
		}
		other := redis.NewStatusCmd(sctx, "select", baseDB)
		var cmd redis.Cmder
		switch how {
		case "pointer":
			w := &taggedCmd{redis.NewStatusCmd(sctx, "select", db)}
			lim.flip = func() { w.StatusCmd = other }
			cmd = w
		case "interface":
			w := &ifaceCmd{redis.NewStatusCmd(sctx, "select", db)}
			lim.flip = func() { w.Cmder = other }
			cmd = w
		default:
			// go-redis's own command, overwritten whole.
			s := redis.NewStatusCmd(sctx, "select", db)
			// (*s = *other, through reflect: go vet refuses a copy of
			// the atomic field go-redis commands hold.)
			lim.flip = func() { reflect.ValueOf(s).Elem().Set(reflect.ValueOf(other).Elem()) }
			cmd = s
		}
		lim.armed.Store(true)
		switch how {
		case "overwritten in a pipeline":
			_, _ = c.Pipelined(sctx, func(pipe redis.Pipeliner) error {
				return pipe.Process(sctx, cmd)
			})
		default:
			err := c.Process(sctx, cmd)
			if (how == "pointer" || how == "interface") && !isRefused(err) {
				t.Errorf("%s: a sandbox command of a wrapper type: %v, want ErrRefused", how, err)
			}
			if how == "overwritten" && err != nil {
				t.Errorf("%s: SELECT of the sandbox's own database: %v", how, err)
			}
		}
		lim.armed.Store(false)
		for range 3 {
			if err := c.Set(sctx, key, "sandbox", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		// Pipelines take their connections from a pool of their own.
		if _, err := c.Pipelined(sctx, func(pipe redis.Pipeliner) error {
			pipe.Set(sctx, key, "sandbox", 0)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if raw(t, baseDB).Exists(ctx, key).Val() != 0 {
			t.Errorf("%s: a command swapped after the check moved the pooled sandbox connection to production's database", how)
		}
	}
}
