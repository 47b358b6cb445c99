package redisroute_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/redisroute"
)

// flipClient is a routed baseline client with one pooled connection and a
// flipLimiter, which go-redis asks between the hooks and the write.
func flipClient(t *testing.T, keys ...string) (*redis.Client, *redisroute.Router, *flipLimiter, string) {
	t.Helper()
	server(t)
	lim := &flipLimiter{}
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB, Limiter: lim, PoolSize: 1})
	p := "rrt:" + t.Name() + ":"
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		for _, k := range keys {
			raw(t, baseDB).Del(context.Background(), p+k)
		}
		c.Close()
	})
	return c, r, lim, p
}

// TestByteArgumentsCannotChangeAfterTheCheck: go-redis writes a []byte (or
// net.IP) argument by reading its bytes when it writes, and the policy's
// copy of the arguments shares them with the caller: "SELECT <the
// sandbox's database>" as []byte checked, its digit changed to the
// baseline's before the write, left the pooled sandbox connection in
// production's database; a DEL of a key as long as the marker, changed to
// the marker after the check, deleted the sandbox's ownership marker.
func TestByteArgumentsCannotChangeAfterTheCheck(t *testing.T) {
	c, r, lim, p := flipClient(t, "after-select")
	ctx := context.Background()
	for _, kind := range []string{"[]byte", "net.IP"} {
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
		if len(strconv.Itoa(db)) != len(strconv.Itoa(baseDB)) {
			t.Skipf("sandbox database %d: not as long as the baseline's %d", db, baseDB)
		}
		// The marker key, reached by bytes that change after the check.
		k := []byte(redisroute.MarkerKey)
		k[0] = 'x'
		lim.flip = func() { k[0] = redisroute.MarkerKey[0] }
		lim.armed.Store(true)
		var ka any = k
		if kind == "net.IP" {
			ka = net.IP(k)
		}
		_ = c.Do(sctx, "del", ka).Err()
		lim.armed.Store(false)
		if owner := raw(t, db).Get(ctx, redisroute.MarkerKey).Val(); owner != id {
			t.Errorf("%s: the marker of the sandbox's database is %q after a DEL whose bytes changed after the check, want %q", kind, owner, id)
		}
		b := []byte(strconv.Itoa(db))
		var a any = b
		if kind == "net.IP" {
			a = net.IP(b)
		}
		lim.flip = func() { copy(b, strconv.Itoa(baseDB)) }
		lim.armed.Store(true)
		_ = c.Do(sctx, "select", a).Err()
		lim.armed.Store(false)
		for range 3 {
			if err := c.Set(sctx, p+"after-select", "sandbox", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if raw(t, baseDB).Exists(ctx, p+"after-select").Val() != 0 {
			t.Errorf("%s: a sandbox's SELECT whose bytes changed after the check moved its pooled connection to production's database", kind)
		}
	}
}

// TestProductionArgumentsCannotChangeAfterTheCheck: the router's
// production range check read the caller's own argument slice (go-redis
// keeps the one given to Do) and the caller's bytes: "SELECT <the
// baseline's database>" checked, then args[1] (or its bytes) set to a
// sandbox's database before the write, moved the pooled production
// connection into the sandbox's database, where production then wrote.
func TestProductionArgumentsCannotChangeAfterTheCheck(t *testing.T) {
	c, r, lim, p := flipClient(t, "prod")
	ctx := context.Background()
	id := newID()
	t.Cleanup(func() { r.Destroy(ctx, id) })
	sctx := sandboxCtx(id)
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(strconv.Itoa(db)) != len(strconv.Itoa(baseDB)) {
		t.Skipf("sandbox database %d: not as long as the baseline's %d", db, baseDB)
	}
	for _, how := range []string{"slice", "bytes", "pipeline slice", "tx pipeline slice"} {
		var args []any
		switch how {
		case "bytes":
			b := []byte(strconv.Itoa(baseDB))
			args = []any{"select", b}
			lim.flip = func() { copy(b, strconv.Itoa(db)) }
		default:
			args = []any{"select", baseDB}
			lim.flip = func() { args[1] = db }
		}
		lim.armed.Store(true)
		switch how {
		case "pipeline slice":
			_, _ = c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Do(ctx, args...)
				return nil
			})
		case "tx pipeline slice":
			_, _ = c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Do(ctx, args...)
				return nil
			})
		default:
			_ = c.Do(ctx, args...).Err()
		}
		if lim.armed.Load() {
			t.Errorf("%s: the limiter was not asked", how)
		}
		lim.armed.Store(false)
		if err := c.Set(ctx, p+"prod", "production", 0).Err(); err != nil {
			t.Fatal(err)
		}
		// Pipelines take their connections from a pool of their own.
		if _, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Set(ctx, p+"prod", "production", 0)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if raw(t, db).Exists(ctx, p+"prod").Val() != 0 {
			t.Errorf("%s: a production SELECT of its own database, changed after the check, moved the production connection into a sandbox's database", how)
			raw(t, db).Del(ctx, p+"prod")
			c.Do(ctx, "select", baseDB)
			c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Do(ctx, "select", baseDB)
				return nil
			})
		}
	}
}

// TestProtocolsAndUniversalClient: a router on the *redis.Client that
// redis.NewUniversalClient returns for one address, with RESP2 and RESP3,
// routes single commands, TxPipelined and Router.Watch transactions to the
// sandbox's database, with their replies (which the policy copies back
// from the private copy it sends), and refuses a sandbox's command on the
// asynchronous AutoPipeliner face.
func TestProtocolsAndUniversalClient(t *testing.T) {
	server(t)
	ctx := context.Background()
	for _, proto := range []int{2, 3} {
		u := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}, DB: baseDB, Protocol: proto})
		c, ok := u.(*redis.Client)
		if !ok {
			t.Fatalf("RESP%d: NewUniversalClient gave a %T", proto, u)
		}
		r, err := redisroute.New(c, dbs)
		if err != nil {
			t.Fatal(err)
		}
		id := newID()
		p := "rrt:" + t.Name() + ":"
		t.Cleanup(func() {
			r.Destroy(ctx, id)
			r.Close()
			raw(t, baseDB).Del(ctx, p+"k", p+"n", p+"async")
			c.Close()
		})
		sctx := sandboxCtx(id)
		if err := u.Set(sctx, p+"k", "sandbox", 0).Err(); err != nil {
			t.Fatalf("RESP%d: %v", proto, err)
		}
		if v, err := u.Get(sctx, p+"k").Result(); v != "sandbox" || err != nil {
			t.Errorf("RESP%d: GET in the sandbox: %q %v", proto, v, err)
		}
		var incr *redis.IntCmd
		if _, err := u.TxPipelined(sctx, func(pipe redis.Pipeliner) error {
			incr = pipe.Incr(sctx, p+"n")
			return nil
		}); err != nil || incr.Val() != 1 {
			t.Errorf("RESP%d: TxPipelined INCR: %d %v", proto, incr.Val(), err)
		}
		if err := r.Watch(sctx, func(tx *redis.Tx) error {
			n, err := tx.Get(sctx, p+"n").Int()
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(sctx, func(pipe redis.Pipeliner) error {
				pipe.Set(sctx, p+"n", n+1, 0)
				return nil
			})
			return err
		}, p+"n"); err != nil {
			t.Errorf("RESP%d: Watch: %v", proto, err)
		}
		ap, err := c.AsyncAutoPipeline()
		if err != nil {
			t.Fatal(err)
		}
		if err := ap.Set(sctx, p+"async", "sandbox", 0).Err(); !isRefused(err) {
			t.Errorf("RESP%d: a sandbox's SET on the asynchronous AutoPipeliner: %v, want ErrRefused", proto, err)
		}
		db, err := r.Database(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if v := raw(t, db).Get(ctx, p+"n").Val(); v != "2" {
			t.Errorf("RESP%d: the sandbox's counter is %q, want 2", proto, v)
		}
		if n := raw(t, baseDB).Exists(ctx, p+"k", p+"n", p+"async").Val(); n != 0 {
			t.Errorf("RESP%d: %d sandbox keys in production's database", proto, n)
		}
	}
}

// TestProductionMigrateKeptOutOfTheRange: MIGRATE names a destination
// database; to the server itself (its own address) it restores the key
// there, in a sandbox's database when that is in the range (Redis answers
// IOERR, blocked on its own reply, then restores the key anyway). The
// router's production check refused SELECT, MOVE, COPY and SWAPDB into
// the range, not MIGRATE: production's key landed in the sandbox's
// database, which the sandbox then read.
func TestProductionMigrateKeptOutOfTheRange(t *testing.T) {
	id := newID()
	c, p, r := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	if err := c.Set(sctx, p+"k", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	c.Set(ctx, p+"m1", "prod", 0)
	c.Set(ctx, p+"m2", "prod", 0)
	for _, m := range []struct {
		what string
		args []any
	}{
		{"MIGRATE", []any{"migrate", host, port, p + "m1", db, 100, "copy"}},
		{"MIGRATE ... KEYS", []any{"MIGRATE", host, port, "", strconv.Itoa(db), 100, "COPY", "KEYS", p + "m2"}},
	} {
		err := c.Do(ctx, m.args...).Err()
		if !errors.Is(err, redisroute.ErrProductionIntoSandboxes) {
			t.Errorf("production %s into the sandbox's database: %v, want ErrProductionIntoSandboxes", m.what, err)
		}
	}
	if n := raw(t, db).Exists(ctx, p+"m1", p+"m2").Val(); n != 0 {
		t.Errorf("%d production keys migrated into the sandbox's database", n)
		raw(t, db).Del(ctx, p+"m1", p+"m2")
	}
	// To a database outside the range, production does as it likes (the
	// server answers IOERR to a MIGRATE to itself; the router lets it go).
	err = c.Do(ctx, "migrate", host, port, p+"m1", baseDB, 100, "copy", "replace").Err()
	if errors.Is(err, redisroute.ErrProductionIntoSandboxes) {
		t.Errorf("MIGRATE to the baseline's own database: %v", err)
	}
}
