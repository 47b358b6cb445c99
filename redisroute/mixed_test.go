package redisroute_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/redisroute"
)

// TestCommandContextWins: a command built with a sandbox's context and
// sent with a production one (a pipeline whose Exec has another context,
// an AutoPipeliner, which sends its batches with context.Background(),
// Process with another context) never reaches production's database: it
// is refused, and the production commands next to it still run.
func TestCommandContextWins(t *testing.T) {
	id := newID()
	c, p, _ := route(t, []string{id})
	g, gp := baseline(t)
	if err := redisroute.Guard(g); err != nil {
		t.Fatal(err)
	}
	ctx, sctx := context.Background(), sandboxCtx(id)

	type tc struct {
		name string
		c    *redis.Client
		p    string
	}
	for _, k := range []tc{{"router", c, p}, {"guard", g, gp}} {
		t.Run(k.name+"/pipeline", func(t *testing.T) {
			pipe := k.c.Pipeline()
			sb := pipe.Set(sctx, k.p+"pipe-sandbox", "sandbox", 0)
			pr := pipe.Set(ctx, k.p+"pipe-prod", "prod", 0)
			pipe.Exec(ctx)
			if err := sb.Err(); !errors.Is(err, redisroute.ErrRefused) && !errors.Is(err, redisroute.ErrSandboxOnBaseline) {
				t.Errorf("sandbox command in a production pipeline: %v, want refused", err)
			}
			if err := pr.Err(); err != nil {
				t.Errorf("production command next to it: %v", err)
			}
			mustAbsent(t, k.c, k.p+"pipe-sandbox")
		})
		t.Run(k.name+"/txpipeline", func(t *testing.T) {
			pipe := k.c.TxPipeline()
			sb := pipe.Set(sctx, k.p+"tx-sandbox", "sandbox", 0)
			pipe.Exec(ctx)
			if sb.Err() == nil {
				t.Error("sandbox command in a production transaction ran")
			}
			mustAbsent(t, k.c, k.p+"tx-sandbox")
		})
		t.Run(k.name+"/process", func(t *testing.T) {
			cmd := redis.NewStatusCmd(sctx, "set", k.p+"proc-sandbox", "sandbox")
			if err := k.c.Process(ctx, cmd); err == nil {
				t.Error("sandbox command sent with a production context ran")
			}
			mustAbsent(t, k.c, k.p+"proc-sandbox")
		})
		for _, mode := range []struct {
			name string
			ap   func(*redis.Client) (*redis.AutoPipeliner, error)
		}{{"autopipeline", (*redis.Client).AutoPipeline}, {"asyncautopipeline", (*redis.Client).AsyncAutoPipeline}} {
			t.Run(k.name+"/"+mode.name, func(t *testing.T) {
				ap, err := mode.ap(k.c)
				if err != nil {
					t.Fatal(err)
				}
				defer ap.Close()
				sb := ap.Set(sctx, k.p+mode.name+"-sandbox", "sandbox", 0)
				pr := ap.Set(ctx, k.p+mode.name+"-prod", "prod", 0)
				if sb.Err() == nil {
					t.Error("sandbox command through an AutoPipeliner ran on the baseline")
				}
				if err := pr.Err(); err != nil {
					t.Errorf("production command through it: %v", err)
				}
				mustAbsent(t, k.c, k.p+mode.name+"-sandbox")
			})
		}
	}
	if v := c.Get(ctx, p+"pipe-prod").Val(); v != "prod" {
		t.Errorf("production value %q", v)
	}
}

// TestPipelineOfAnotherSandbox: commands built for sandbox A and sent in a
// pipeline with sandbox B's context are refused, in neither database.
func TestPipelineOfAnotherSandbox(t *testing.T) {
	a, b := newID(), newID()
	c, p, r := route(t, []string{a, b})
	actx, bctx := sandboxCtx(a), sandboxCtx(b)
	pipe := c.Pipeline()
	cmd := pipe.Set(actx, p+"a", "a", 0)
	_, err := pipe.Exec(bctx)
	if !errors.Is(err, redisroute.ErrRefused) || !errors.Is(cmd.Err(), redisroute.ErrRefused) {
		t.Errorf("A's command in B's pipeline: %v / %v, want ErrRefused", err, cmd.Err())
	}
	for _, ctx := range []context.Context{actx, bctx} {
		db, err := r.Database(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := raw(t, db).Exists(context.Background(), p+"a").Val(); n != 0 {
			t.Errorf("A's key reached database %d", db)
		}
	}
}

func mustAbsent(t *testing.T, c *redis.Client, key string) {
	t.Helper()
	if n := c.Exists(context.Background(), key).Val(); n != 0 {
		t.Errorf("%s reached the baseline's database", key)
	}
}

// TestCommandContextRead: the context a command was built with is read
// for the command types of go-redis, nested ones included.
func TestCommandContextRead(t *testing.T) {
	sctx := sandboxCtx("rrt-read")
	for _, cmd := range []redis.Cmder{
		redis.NewCmd(sctx, "get", "k"),
		redis.NewStatusCmd(sctx, "set", "k", "v"),
		redis.NewStringCmd(sctx, "get", "k"),
		redis.NewIntCmd(sctx, "incr", "k"),
		redis.NewSliceCmd(sctx, "mget", "k"),
		redis.NewXStreamSliceCmd(sctx, "xread"),
		redis.NewMapStringStringCmd(sctx, "hgetall", "k"),
		redis.NewRawCmd(sctx, "get", "k"), // DoRaw
		redis.NewRawWriteToCmd(sctx, io.Discard, "get", "k"),
		redis.NewScanCmd(sctx, nil, "scan", 0),
	} {
		if id, ok := redisroute.CommandSandbox(cmd); !ok || id != "rrt-read" {
			t.Errorf("%T: sandbox %q, %v", cmd, id, ok)
		}
	}
	if _, ok := redisroute.CommandSandbox(redis.NewStringCmd(context.Background(), "get", "k")); ok {
		t.Error("a production command read as a sandbox's")
	}
}

// binary is an argument go-redis writes with MarshalBinary, whatever its
// String says.
type binary struct{ wire, shown string }

func (b binary) MarshalBinary() ([]byte, error) { return []byte(b.wire), nil }
func (b binary) String() string                 { return b.shown }

// TestArgumentsReadAsWritten: the policy reads each argument as go-redis
// writes it (a *string as its string, a BinaryMarshaler as its bytes), so
// neither the marker key nor a refused command slips through in another
// Go type.
func TestArgumentsReadAsWritten(t *testing.T) {
	id := newID()
	c, _, r := route(t, []string{id})
	sctx := sandboxCtx(id)
	if err := c.Set(sctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	marker := redisroute.MarkerKey
	for name, args := range map[string][]any{
		"del *string marker":          {"del", &marker},
		"del BinaryMarshaler marker":  {"del", binary{marker, "harmless"}},
		"BinaryMarshaler flushdb":     {binary{"flushdb", "dbsize"}, nil},
		"*string command flushdb":     {ptr("flushdb")},
		"select BinaryMarshaler db 1": {"select", binary{"1", "x"}},
	} {
		if args[len(args)-1] == nil {
			args = args[:len(args)-1]
		}
		if err := c.Do(sctx, args...).Err(); !isRefused(err) {
			t.Errorf("%s: %v, want ErrRefused", name, err)
		}
	}
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if owner := raw(t, db).Get(context.Background(), redisroute.MarkerKey).Val(); owner != id {
		t.Errorf("the marker of the sandbox's database is %q, want %q", owner, id)
	}
	if n := raw(t, db).Exists(context.Background(), "k").Val(); n != 1 {
		t.Error("the sandbox's key is gone")
	}
}

func ptr(s string) *string { return &s }

// Command types of the caller's: a redis.Cmder has unexported methods, so
// one must embed a go-redis command, often by pointer (a wrapper that adds
// a tag to a command), or behind fields of its own.
type (
	taggedCmd struct{ *redis.StatusCmd }
	innerCmd  struct{ *redis.StatusCmd }
	deepCmd   struct {
		tag string
		innerCmd
	}
)

// TestWrappedCommandContextRead: a command of the caller's type that
// embeds a go-redis command by pointer (a pointer to the wrapper, the
// wrapper itself, or one behind another field) keeps the context it was
// built with where go-redis's own commands do, and the hooks read it: a
// sandbox's wrapped SET in an AutoPipeliner's batch (sent with
// context.Background()) is refused, and never reaches production. A nil
// embedded command is read as having no context.
func TestWrappedCommandContextRead(t *testing.T) {
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
			{"pointer to wrapper", func(k string) redis.Cmder { return &taggedCmd{redis.NewStatusCmd(sctx, "set", k, "sandbox")} }},
			{"wrapper value", func(k string) redis.Cmder { return taggedCmd{redis.NewStatusCmd(sctx, "set", k, "sandbox")} }},
			{"behind a field", func(k string) redis.Cmder {
				return &deepCmd{tag: "t", innerCmd: innerCmd{redis.NewStatusCmd(sctx, "set", k, "sandbox")}}
			}},
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
	if _, ok := redisroute.CommandSandbox(&taggedCmd{}); ok {
		t.Error("a wrapper with a nil command reads as a sandbox's")
	}
	if _, ok := redisroute.CommandSandbox(&taggedCmd{redis.NewStatusCmd(ctx, "ping")}); ok {
		t.Error("a production wrapper reads as a sandbox's")
	}
}
