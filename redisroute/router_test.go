package redisroute_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/redisroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

func TestRouteSeparatesKeys(t *testing.T) {
	id := newID()
	rec, logger := audittest.New()
	c, p, r := route(t, []string{id}, redisroute.WithLogger(logger))
	ctx, sctx := context.Background(), sandboxCtx(id)

	if err := c.Set(ctx, p+"price", "10", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(sctx, p+"price", "99", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, p+"price").Val(); v != "10" {
		t.Errorf("production reads %q, want 10", v)
	}
	if v := c.Get(sctx, p+"price").Val(); v != "99" {
		t.Errorf("sandbox reads %q, want 99", v)
	}
	if err := c.Set(sctx, p+"only-sandbox", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, p+"only-sandbox").Val(); n != 0 {
		t.Errorf("production sees the sandbox's key")
	}
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if db < sandboxFirst || db > sandboxLast {
		t.Fatalf("sandbox database %d outside %d..%d", db, sandboxFirst, sandboxLast)
	}
	if v := raw(t, db).Get(ctx, p+"price").Val(); v != "99" {
		t.Errorf("sandbox database %d holds %q", db, v)
	}
	if v := raw(t, baseDB).Get(ctx, p+"price").Val(); v != "10" {
		t.Errorf("baseline database holds %q", v)
	}
	if got := count(rec.Records(), func(m map[string]string) bool {
		return m[audit.KeyDecision] == string(audit.Routed) && m[audit.KeyID] == id && m[audit.KeyProtocol] == audit.Redis
	}); got != 1 {
		t.Errorf("%d routed records, want 1 (one per sandbox database opened)", got)
	}
}

func TestPipelinesAndTransactions(t *testing.T) {
	id := newID()
	c, p, r := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	c.Set(ctx, p+"n", 100, 0)

	cmds, err := c.Pipelined(sctx, func(pipe redis.Pipeliner) error {
		pipe.Incr(sctx, p+"n")
		pipe.Incr(sctx, p+"n")
		return nil
	})
	if err != nil || cmds[1].(*redis.IntCmd).Val() != 2 {
		t.Fatalf("sandbox pipeline: %v %v, want 2", cmds, err)
	}
	var incr *redis.IntCmd
	if _, err := c.TxPipelined(sctx, func(pipe redis.Pipeliner) error {
		incr = pipe.Incr(sctx, p+"n")
		return nil
	}); err != nil || incr.Val() != 3 {
		t.Fatalf("sandbox transaction: %v %v, want 3", incr, err)
	}
	// A WATCH transaction on one sandbox connection.
	err = r.Watch(sctx, func(tx *redis.Tx) error {
		n, err := tx.Get(sctx, p+"n").Int()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(sctx, func(pipe redis.Pipeliner) error {
			pipe.Set(sctx, p+"n", n*10, 0)
			return nil
		})
		return err
	}, p+"n")
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Get(sctx, p+"n").Val(); v != "30" {
		t.Errorf("sandbox n = %s, want 30", v)
	}
	if v := c.Get(ctx, p+"n").Val(); v != "100" {
		t.Errorf("production n = %s, want 100 (untouched)", v)
	}
	// Production transactions still work.
	if err := r.Watch(ctx, func(tx *redis.Tx) error {
		_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error { pipe.Incr(ctx, p+"n"); return nil })
		return err
	}, p+"n"); err != nil || c.Get(ctx, p+"n").Val() != "101" {
		t.Errorf("production watch: %v, n=%s", err, c.Get(ctx, p+"n").Val())
	}

	// A bare WATCH on the baseline client would lose its connection.
	err = c.Watch(sctx, func(tx *redis.Tx) error { return nil }, p+"n")
	if !isRefused(err) {
		t.Errorf("baseline Watch with a sandbox context: %v, want ErrRefused", err)
	}
	if err := c.Do(sctx, "multi").Err(); !isRefused(err) {
		t.Errorf("bare MULTI: %v, want ErrRefused", err)
	}
	_, err = c.Pipelined(sctx, func(pipe redis.Pipeliner) error {
		pipe.Do(sctx, "multi")
		pipe.Incr(sctx, p+"n")
		pipe.Do(sctx, "exec")
		pipe.Incr(sctx, p+"n")
		return nil
	})
	if !isRefused(err) {
		t.Errorf("MULTI inside a plain pipeline: %v, want ErrRefused", err)
	}
	// A pipeline with one refused command sends none of them.
	_, err = c.Pipelined(sctx, func(pipe redis.Pipeliner) error {
		pipe.Set(sctx, p+"partial", 1, 0)
		pipe.Publish(sctx, "orders", "x")
		return nil
	})
	if !isRefused(err) {
		t.Errorf("pipeline with PUBLISH: %v, want ErrRefused", err)
	}
	if n := c.Exists(sctx, p+"partial").Val(); n != 0 {
		t.Errorf("a refused pipeline wrote its other commands")
	}
}

func TestPubSubRefused(t *testing.T) {
	id := newID()
	c, _, _ := route(t, []string{id})
	sctx := sandboxCtx(id)
	if err := c.Publish(sctx, "orders", "x").Err(); !isRefused(err) {
		t.Errorf("PUBLISH: %v, want ErrRefused", err)
	}
	if err := c.SPublish(sctx, "orders", "x").Err(); !isRefused(err) {
		t.Errorf("SPUBLISH: %v, want ErrRefused", err)
	}
	ps := c.Subscribe(sctx, "orders")
	defer ps.Close()
	if _, err := ps.Receive(sctx); !isRefused(err) {
		t.Errorf("SUBSCRIBE: %v, want ErrRefused", err)
	}
	pps := c.PSubscribe(sctx, "ord*")
	defer pps.Close()
	if _, err := pps.Receive(sctx); !isRefused(err) {
		t.Errorf("PSUBSCRIBE: %v, want ErrRefused", err)
	}
	// Production subscribes as ever.
	ctx := context.Background()
	prod := c.Subscribe(ctx, "rrt-orders")
	defer prod.Close()
	if _, err := prod.Receive(ctx); err != nil {
		t.Errorf("production SUBSCRIBE: %v", err)
	}
}

func TestScriptsRefused(t *testing.T) {
	id := newID()
	c, p, _ := route(t, []string{id})
	sctx := sandboxCtx(id)
	for name, err := range map[string]error{
		"EVAL":       c.Eval(sctx, "return redis.call('GET', KEYS[1])", []string{p + "k"}).Err(),
		"EVAL_RO":    c.EvalRO(sctx, "return 1", []string{p + "k"}).Err(),
		"EVALSHA":    c.EvalSha(sctx, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", []string{p + "k"}).Err(),
		"FCALL":      c.FCall(sctx, "f", []string{p + "k"}).Err(),
		"SCRIPT":     c.ScriptLoad(sctx, "return 1").Err(),
		"FUNCTION":   c.FunctionList(sctx, redis.FunctionListQuery{}).Err(),
		"EVAL (Run)": redis.NewScript("return 1").Run(sctx, c, []string{p + "k"}).Err(),
	} {
		if !isRefused(err) {
			t.Errorf("%s: %v, want ErrRefused", name, err)
		}
	}
}

func TestBlockingCommandsIsolated(t *testing.T) {
	id := newID()
	c, p, _ := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	c.RPush(ctx, p+"jobs", "prod-job")
	c.RPush(sctx, p+"jobs", "sandbox-job")
	if v, err := c.BLPop(sctx, 0, p+"jobs").Result(); err != nil || v[1] != "sandbox-job" {
		t.Errorf("sandbox BLPOP: %v %v", v, err)
	}
	if v, err := c.BLMove(ctx, p+"jobs", p+"done", "LEFT", "RIGHT", 0).Result(); err != nil || v != "prod-job" {
		t.Errorf("production BLMOVE: %q %v", v, err)
	}
	c.ZAdd(sctx, p+"z", redis.Z{Score: 1, Member: "s"})
	if v, err := c.BZPopMin(sctx, 0, p+"z").Result(); err != nil || v.Member != "s" {
		t.Errorf("sandbox BZPOPMIN: %v %v", v, err)
	}
}

func TestNotInRouteTable(t *testing.T) {
	known, unknown := newID(), newID()
	table, err := routes.NewStatic([]routes.Sandbox{{ID: known}})
	if err != nil {
		t.Fatal(err)
	}
	rec, logger := audittest.New()
	c, p, _ := route(t, []string{known}, redisroute.WithRoutes(table), redisroute.WithLogger(logger))
	if err := c.Set(sandboxCtx(known), p+"k", 1, 0).Err(); err != nil {
		t.Fatalf("known sandbox: %#v", err)
	}
	err = c.Set(sandboxCtx(unknown), p+"k", 1, 0).Err()
	if !errors.Is(err, redisroute.ErrNoSandboxDatabase) {
		t.Fatalf("unknown sandbox: %v, want ErrNoSandboxDatabase", err)
	}
	if c.Exists(context.Background(), p+"k").Val() != 0 {
		t.Error("an unknown sandbox's write reached production")
	}
	if count(rec.Records(), func(m map[string]string) bool {
		return m[audit.KeyDecision] == string(audit.Rejected) && m[audit.KeyID] == unknown
	}) != 1 {
		t.Error("no rejected record for the unknown sandbox")
	}
}

func TestClosedRouterRefuses(t *testing.T) {
	id := newID()
	c, p := baseline(t)
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(sandboxCtx(id), p+"k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r2, _ := redisroute.New(raw(t, baseDB), dbs)
		r2.Destroy(context.Background(), id)
		r2.Close()
	})
	if err := c.Set(sandboxCtx(id), p+"k", "v", 0).Err(); !errors.Is(err, redisroute.ErrClosed) {
		t.Errorf("sandbox command after Close: %v, want ErrClosed", err)
	}
	if err := c.Set(context.Background(), p+"k", "prod", 0).Err(); err != nil {
		t.Errorf("production after Close: %v", err)
	}
	if v := c.Get(context.Background(), p+"k").Val(); v != "prod" {
		t.Errorf("production value %q", v)
	}
}

// TestOtherHandlesOfTheBaseline: a Conn taken from the baseline client
// routes sandbox commands too (newConn clones the client's hooks), and
// cannot be turned to production's database with SELECT. A WithTimeout
// clone is not such a handle: in go-redis 9.23 it has no hooks at all
// (TestWithTimeoutCloneHasNoHooks, and the package doc).
func TestOtherHandlesOfTheBaseline(t *testing.T) {
	id := newID()
	c, p, _ := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	c.Set(ctx, p+"k", "prod", 0)

	cn := c.Conn()
	defer cn.Close()
	if err := cn.Ping(ctx).Err(); err != nil { // the Conn holds a baseline connection
		t.Fatal(err)
	}
	if err := cn.Set(sctx, p+"k", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cn.Select(sctx, baseDB).Err(); !isRefused(err) {
		t.Errorf("SELECT of production's database on a Conn: %v, want ErrRefused", err)
	}
	if _, err := cn.TxPipelined(sctx, func(pipe redis.Pipeliner) error { pipe.Set(sctx, p+"tx", "sandbox", 0); return nil }); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, p+"k").Val(); v != "prod" {
		t.Errorf("production value %q", v)
	}
	for _, k := range []string{p + "tx"} {
		if c.Exists(ctx, k).Val() != 0 {
			t.Errorf("%s reached production", k)
		}
		if c.Exists(sctx, k).Val() != 1 {
			t.Errorf("%s not in the sandbox", k)
		}
	}
	if v := c.Get(sctx, p+"k").Val(); v != "sandbox" {
		t.Errorf("sandbox value %q", v)
	}
}
