package redisroute_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/internal/compiletest"
	"github.com/sandboxkit/sandboxkit/redisroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

func TestGuard(t *testing.T) {
	c, p := baseline(t)
	rec, logger := audittest.New()
	if err := redisroute.Guard(c, redisroute.WithLogger(logger)); err != nil {
		t.Fatal(err)
	}
	ctx, sctx := context.Background(), sandboxCtx(newID())
	if err := c.Set(ctx, p+"k", "prod", 0).Err(); err != nil {
		t.Fatalf("production through the guard: %v", err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, redisroute.ErrSandboxOnBaseline) {
			t.Errorf("%s with a sandbox context: %v, want ErrSandboxOnBaseline", what, err)
		}
	}
	refused("SET", c.Set(sctx, p+"k", "sandbox", 0).Err())
	refused("GET", c.Get(sctx, p+"k").Err())
	_, err := c.Pipelined(sctx, func(pipe redis.Pipeliner) error { pipe.Set(sctx, p+"k", "sandbox", 0); return nil })
	refused("pipeline", err)
	_, err = c.TxPipelined(sctx, func(pipe redis.Pipeliner) error { pipe.Set(sctx, p+"k", "sandbox", 0); return nil })
	refused("transaction", err)
	refused("WATCH", c.Watch(sctx, func(*redis.Tx) error { return nil }, p+"k"))
	refused("EVAL", c.Eval(sctx, "return redis.call('SET', KEYS[1], 'sandbox')", []string{p + "k"}).Err())
	refused("PUBLISH", c.Publish(sctx, "orders", "x").Err())
	ps := c.Subscribe(sctx, "orders")
	_, err = ps.Receive(sctx)
	ps.Close()
	refused("SUBSCRIBE", err)
	// A connection taken with a baseline context and used with a sandbox
	// context is refused too: every command goes through the hook.
	cn := c.Conn()
	if err := cn.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	refused("SET on a Conn", cn.Set(sctx, p+"k", "sandbox", 0).Err())
	cn.Close()
	if v := c.Get(ctx, p+"k").Val(); v != "prod" {
		t.Errorf("production value %q after the refusals", v)
	}
	n := count(rec.Records(), func(m map[string]string) bool {
		return m[audit.KeyDecision] == string(audit.Rejected) && m[audit.KeyProtocol] == audit.Redis &&
			strings.HasPrefix(m[audit.KeyReason], redisroute.ErrSandboxOnBaseline.Error())
	})
	if n < 9 {
		t.Errorf("%d rejected records, want one per refusal (9 or more)", n)
	}
}

func TestDestroyAndReap(t *testing.T) {
	a, b, gone := newID(), newID(), newID()
	table, err := routes.NewStatic([]routes.Sandbox{{ID: a}, {ID: b}, {ID: gone}})
	if err != nil {
		t.Fatal(err)
	}
	c, p, r := route(t, []string{a, b, gone}, redisroute.WithRoutes(table))
	ctx := context.Background()
	c.Set(ctx, p+"k", "prod", 0)
	dbOf := map[string]int{}
	for _, id := range []string{a, b, gone} {
		if err := c.Set(sandboxCtx(id), p+"k", id, 0).Err(); err != nil {
			t.Fatal(err)
		}
		dbOf[id], _ = r.Database(sandboxCtx(id))
	}
	if dbOf[a] == dbOf[b] || dbOf[b] == dbOf[gone] || dbOf[a] == dbOf[gone] {
		t.Fatalf("sandboxes share a database: %v", dbOf)
	}
	if err := r.Destroy(ctx, a); err != nil {
		t.Fatal(err)
	}
	if n := raw(t, dbOf[a]).DBSize(ctx).Val(); n != 0 {
		t.Errorf("destroyed sandbox's database holds %d keys", n)
	}
	if v := c.Get(sandboxCtx(b), p+"k").Val(); v != b {
		t.Errorf("Destroy(a) touched b: %q", v)
	}
	if v := c.Get(ctx, p+"k").Val(); v != "prod" {
		t.Errorf("Destroy touched production: %q", v)
	}
	// Used again, a is a new, empty sandbox.
	if n := c.Exists(sandboxCtx(a), p+"k").Val(); n != 0 {
		t.Errorf("a destroyed sandbox's key came back")
	}

	// gone leaves the table: Reap flushes its database, and only it.
	// Sandboxes of other processes on the shared server (an example, the
	// shop demo) stay in the table: this test must not reap them.
	for db := sandboxFirst; db <= sandboxLast; db++ {
		if owner := raw(t, db).Get(ctx, redisroute.MarkerKey).Val(); owner != "" && !strings.HasPrefix(owner, testIDPrefix) {
			if err := table.Put(routes.Sandbox{ID: owner}); err != nil {
				t.Fatal(err)
			}
		}
	}
	table.Remove(gone)
	reaped, err := r.Reap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reaped) != 1 || reaped[0] != gone {
		t.Errorf("Reap removed %v, want [%s]", reaped, gone)
	}
	if n := raw(t, dbOf[gone]).DBSize(ctx).Val(); n != 0 {
		t.Errorf("reaped database holds %d keys", n)
	}
	if v := c.Get(sandboxCtx(b), p+"k").Val(); v != b {
		t.Errorf("Reap touched b: %q", v)
	}
	if v := c.Get(ctx, p+"k").Val(); v != "prod" {
		t.Errorf("Reap touched production: %q", v)
	}
	if err := c.Get(sandboxCtx(gone), p+"k").Err(); !errors.Is(err, redisroute.ErrNoSandboxDatabase) {
		t.Errorf("a reaped sandbox not in the table: %v", err)
	}
}

// TestDatabaseWithDataIsNotClaimed: a database of the range that holds keys
// without a marker belongs to somebody: no sandbox is given it.
func TestDatabaseWithDataIsNotClaimed(t *testing.T) {
	server(t)
	ctx := context.Background()
	foreign := raw(t, sandboxLast)
	if n := foreign.DBSize(ctx).Val(); n != 0 {
		t.Skipf("database %d is in use", sandboxLast)
	}
	foreign.Set(ctx, "rrt:someone-elses", "v", 0)
	t.Cleanup(func() { foreign.Del(ctx, "rrt:someone-elses") })
	c, _ := baseline(t)
	r, err := redisroute.New(c, redisroute.Databases{First: sandboxLast, Last: sandboxLast})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = c.Set(sandboxCtx(newID()), "k", "v", 0).Err()
	if !errors.Is(err, redisroute.ErrNoSandboxDatabase) {
		t.Errorf("claim of a database with data: %v, want ErrNoSandboxDatabase", err)
	}
	if n := foreign.DBSize(ctx).Val(); n != 1 {
		t.Errorf("the foreign database holds %d keys, want its 1", n)
	}
}

func TestConfigErrors(t *testing.T) {
	server(t)
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB})
	defer c.Close()
	table := routes.New()
	for name, err := range map[string]error{
		"nil baseline":         errOf(redisroute.New(nil, dbs)),
		"negative":             errOf(redisroute.New(c, redisroute.Databases{First: -1, Last: 3})),
		"reversed":             errOf(redisroute.New(c, redisroute.Databases{First: 5, Last: 3})),
		"holds the baseline":   errOf(redisroute.New(c, redisroute.Databases{First: 0, Last: 3})),
		"nil logger":           errOf(redisroute.New(c, dbs, redisroute.WithLogger(nil))),
		"nil table":            errOf(redisroute.New(c, dbs, redisroute.WithRoutes(nil))),
		"guard nil client":     redisroute.Guard(nil),
		"guard nil logger":     redisroute.Guard(c, redisroute.WithLogger(nil)),
		"reap without a table": errOf(mustRouter(t, c).Reap(context.Background())),
	} {
		if !errors.Is(err, redisroute.ErrConfig) || !strings.HasPrefix(err.Error(), "redisroute: ") {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	// Nil options are skipped.
	r, err := redisroute.New(c, dbs, nil, redisroute.WithRoutes(table), nil)
	if err != nil {
		t.Errorf("nil options: %v", err)
	} else {
		r.Close()
	}
	if err := redisroute.Guard(c, nil); err != nil {
		t.Errorf("nil guard option: %v", err)
	}
}

func mustRouter(t *testing.T, c *redis.Client) *redisroute.Router {
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func errOf[T any](_ T, err error) error { return err }

// TestOptionRoles: an option a constructor cannot use does not compile.
func TestOptionRoles(t *testing.T) {
	c := compiletest.New(t, "github.com/sandboxkit/sandboxkit/redisroute", "github.com/sandboxkit/sandboxkit/routes", "github.com/redis/go-redis/v9", "log/slog")
	const head = `package p

import (
	"log/slog"

	"github.com/redis/go-redis/v9"
	"github.com/sandboxkit/sandboxkit/redisroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

func f(c *redis.Client, tab *routes.Table, l *slog.Logger) {
`
	for _, tc := range []struct{ name, body, want string }{
		{"control", `
	redisroute.New(c, redisroute.Databases{}, redisroute.WithRoutes(tab), redisroute.WithLogger(l))
	redisroute.Guard(c, redisroute.WithLogger(l))
	var o redisroute.Option = redisroute.WithLogger(l)
	redisroute.New(c, redisroute.Databases{}, o)
	redisroute.Guard(c, o)`, ""},
		{"route table to a guard", `redisroute.Guard(c, redisroute.WithRoutes(tab))`, "does not implement redisroute.GuardOption"},
		{"a router option is not an Option", `var _ redisroute.Option = redisroute.WithRoutes(tab)`, "does not implement redisroute.Option"},
		{"New returns an error", `var _ *redisroute.Router = redisroute.New(c, redisroute.Databases{})`, "value"},
	} {
		err := c.Check(head + tc.body + "\n}\n")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want it to compile", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want a compile error with %q", tc.name, err, tc.want)
		}
	}
}
