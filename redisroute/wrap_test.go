package redisroute_test

import (
	"context"
	"errors"
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
