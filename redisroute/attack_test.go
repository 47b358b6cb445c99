package redisroute_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/redisroute"
)

// fickle is an argument whose bytes change after two reads (the router's
// and the policy's): what the hooks read, then what go-redis writes.
type fickle struct {
	first, then string
	n           *atomic.Int32
}

func (f fickle) MarshalBinary() ([]byte, error) {
	if f.n.Add(1) <= 2 {
		return []byte(f.first), nil
	}
	return []byte(f.then), nil
}

// TestArgumentsCannotChangeAfterTheCheck: the policy checks the bytes that
// are written, not a first reading of an argument that may change.
func TestArgumentsCannotChangeAfterTheCheck(t *testing.T) {
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
	// "select <db>" to the policy, "select <baseline>" on the wire: the
	// pooled sandbox connection would then serve production's database.
	sel := fickle{first: strconv.Itoa(db), then: strconv.Itoa(baseDB), n: new(atomic.Int32)}
	if err := c.Do(sctx, "select", sel).Err(); err != nil {
		t.Errorf("SELECT of its own database with a fickle argument: %v", err)
	}
	for range 5 {
		if err := c.Set(sctx, p+"after-select", "sandbox", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if raw(t, baseDB).Exists(ctx, p+"after-select").Val() != 0 {
		t.Error("a fickle SELECT moved a sandbox connection to production's database")
	}
	// "get" to the policy, "flushdb" on the wire: the sandbox would free
	// its own database while using it. (Another sandbox: the one above
	// may have a connection in production's database if the SELECT got
	// through.)
	b := newID()
	t.Cleanup(func() { r.Destroy(ctx, b) })
	bctx := sandboxCtx(b)
	if err := c.Set(bctx, p+"k", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	bdb, err := r.Database(bctx)
	if err != nil {
		t.Fatal(err)
	}
	name := fickle{first: "get", then: "flushdb", n: new(atomic.Int32)}
	_ = c.Do(bctx, name).Err() // FLUSHDB takes no key
	if raw(t, bdb).Get(ctx, redisroute.MarkerKey).Val() != b {
		t.Error("a fickle command name flushed the sandbox's database")
	}
	// The marker key itself, behind a *string the caller changes later is
	// covered by freezing too: the policy reads it once.
	key := redisroute.MarkerKey
	if err := c.Do(sctx, "del", &key).Err(); !isRefused(err) {
		t.Errorf("DEL of the marker through a *string: %v, want ErrRefused", err)
	}
}

// flipLimiter is an Options.Limiter that runs flip on the first Allow
// after it is armed: go-redis asks it when it takes a connection for a
// command, after the hooks have run and before the command is written, so
// flip changes an argument exactly between the check and the write (as
// another goroutine could, with a race).
type flipLimiter struct {
	armed atomic.Bool
	flip  func()
}

func (l *flipLimiter) Allow() error {
	if l.armed.CompareAndSwap(true, false) {
		l.flip()
	}
	return nil
}
func (l *flipLimiter) ReportResult(error) {}

// TestPointerArgumentsCannotChangeAfterTheCheck: go-redis writes a *int or
// *bool argument by reading it when it writes (internal/proto
// Writer.WriteArg), and the checks read it before: "SELECT <sandbox's db>"
// to the sandbox policy, "SELECT <baseline's db>" on the wire, would leave
// the pooled sandbox connection in production's database for the
// sandbox's next commands; "SELECT <baseline's db>" to the router's
// production check, "SELECT <a sandbox's db>" on the wire, would put a
// production connection in a sandbox's database. Both checks must read the
// values that are written.
func TestPointerArgumentsCannotChangeAfterTheCheck(t *testing.T) {
	c, r, lim, p := flipClient(t, "after-select", "prod")
	ctx := context.Background()
	id := newID()
	t.Cleanup(func() { r.Destroy(ctx, id) })
	sctx := sandboxCtx(id)
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(sctx, p+"before", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	n := db
	lim.flip = func() { n = baseDB }
	lim.armed.Store(true)
	_ = c.Do(sctx, "select", &n).Err()
	for range 3 {
		if err := c.Set(sctx, p+"after-select", "sandbox", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if raw(t, baseDB).Exists(ctx, p+"after-select").Val() != 0 {
		t.Error("a sandbox's SELECT through a *int moved its pooled connection to production's database")
	}

	// Production: SELECT of its own database through a *int that becomes a
	// sandbox's database before it is written.
	m := baseDB
	lim.flip = func() { m = db }
	lim.armed.Store(true)
	_ = c.Do(ctx, "select", &m).Err()
	if err := c.Set(ctx, p+"prod", "production", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if raw(t, db).Exists(ctx, p+"prod").Val() != 0 {
		t.Error("a production SELECT through a *int moved the production connection into a sandbox's database")
	}
	// Production: a command name that reads "echo" to the router's check and
	// "select" to the writer. (Back to production's database first, should
	// the SELECT above have got through.)
	if err := c.Do(ctx, "select", baseDB).Err(); err != nil {
		t.Fatal(err)
	}
	raw(t, db).Del(ctx, p+"prod")
	n2 := new(atomic.Int32)
	n2.Store(1) // one reading as "echo": the router's
	_ = c.Do(ctx, fickle{first: "echo", then: "select", n: n2}, db).Err()
	if err := c.Set(ctx, p+"prod", "production", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if raw(t, db).Exists(ctx, p+"prod").Val() != 0 {
		t.Error("a production command named by a marshaler selected a sandbox's database")
	}
}

// TestArgumentSliceCannotChangeAfterTheCheck: go-redis keeps the slice
// given to Do as the command's arguments (NewCmd) and reads it again when
// it writes: a caller that sets args[1] of "SELECT <the sandbox's
// database>" to production's database after the policy's check (another
// goroutine, here the Limiter go-redis asks between the hooks and the
// write) would leave the pooled sandbox connection in production's
// database. The policy checks a copy that it gives the command.
func TestArgumentSliceCannotChangeAfterTheCheck(t *testing.T) {
	c, r, lim, p := flipClient(t, "after-select")
	ctx := context.Background()
	id := newID()
	t.Cleanup(func() { r.Destroy(ctx, id) })
	sctx := sandboxCtx(id)
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(sctx, p+"before", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	args := []any{"select", db}
	lim.flip = func() { args[1] = baseDB }
	lim.armed.Store(true)
	_ = c.Do(sctx, args...).Err()
	for range 3 {
		if err := c.Set(sctx, p+"after-select", "sandbox", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if raw(t, baseDB).Exists(ctx, p+"after-select").Val() != 0 {
		t.Error("a sandbox's SELECT whose argument slice changed after the check moved its pooled connection to production's database")
	}
	if raw(t, db).Exists(ctx, p+"after-select").Val() != 1 {
		t.Error("the sandbox's SET is not in its database")
	}
}

// selectCmd is a command type of the caller's with its own Args, which
// go-redis calls again when it writes.
type selectCmd struct {
	*redis.StatusCmd
	db *int
}

func (c *selectCmd) Args() []any { return []any{"select", *c.db} }

// TestOwnArgsMethodRefused: a command whose Args method is not its go-redis
// command's returns what it likes each time it is called: "SELECT <the
// sandbox's database>" to the policy, "SELECT <production's>" to the
// writer, moving the pooled sandbox connection to production's database.
// The policy refuses such a command for a sandbox.
func TestOwnArgsMethodRefused(t *testing.T) {
	c, r, lim, p := flipClient(t, "after-select")
	ctx := context.Background()
	id := newID()
	t.Cleanup(func() { r.Destroy(ctx, id) })
	sctx := sandboxCtx(id)
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(sctx, p+"before", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	n := db
	lim.flip = func() { n = baseDB }
	lim.armed.Store(true)
	cmd := &selectCmd{StatusCmd: redis.NewStatusCmd(sctx, "select", db), db: &n}
	if err := c.Process(sctx, cmd); !isRefused(err) {
		t.Errorf("a command with its own Args: %v, want ErrRefused", err)
	}
	lim.armed.Store(false)
	if err := c.Set(sctx, p+"after-select", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if raw(t, baseDB).Exists(ctx, p+"after-select").Val() != 0 {
		t.Error("a command with its own Args moved the pooled sandbox connection to production's database")
	}
}

// TestBareTransactionByMarshalerRefused: cmd.Name() is empty for a name
// given as an encoding.BinaryMarshaler; the router reads the name go-redis
// writes.
func TestBareTransactionByMarshalerRefused(t *testing.T) {
	id := newID()
	c, _, _ := route(t, []string{id})
	sctx := sandboxCtx(id)
	multi := fickle{first: "multi", then: "multi", n: new(atomic.Int32)}
	if err := c.Do(sctx, multi).Err(); !isRefused(err) {
		t.Errorf("MULTI given as a BinaryMarshaler: %v, want ErrRefused", err)
	}
}

// TestBareTransactionByFickleNameRefused: a name that reads "get" to the
// router's check for bare transactions and "multi" to the policy (which
// allows MULTI: TxPipelined sends it) and the writer would leave the
// pooled sandbox connection inside a MULTI, queueing the sandbox's next
// commands instead of running them. The router and the policy read one
// frozen name.
func TestBareTransactionByFickleNameRefused(t *testing.T) {
	server(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB, PoolSize: 1})
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	id := newID()
	t.Cleanup(func() {
		r.Destroy(ctx, id)
		r.Close()
		c.Close()
	})
	sctx := sandboxCtx(id)
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	n := new(atomic.Int32)
	n.Store(1) // one reading as "get": the router's
	_ = c.Do(sctx, fickle{first: "get", then: "multi", n: n}).Err()
	if err := c.Set(sctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := raw(t, db).Get(ctx, "k").Val(); got != "v" {
		t.Errorf("the sandbox's SET after a fickle MULTI did not run (%q): its connection was left in a transaction", got)
	}
}

// TestWatchRefusesAnotherSandboxsCommands: inside Router.Watch for sandbox
// A, a command built with sandbox B's context is refused, as it is on the
// baseline.
func TestWatchRefusesAnotherSandboxsCommands(t *testing.T) {
	a, b := newID(), newID()
	c, p, r := route(t, []string{a, b})
	actx, bctx := sandboxCtx(a), sandboxCtx(b)
	err := r.Watch(actx, func(tx *redis.Tx) error {
		if err := tx.Set(bctx, p+"b-in-a", "b", 0).Err(); !isRefused(err) {
			t.Errorf("B's SET inside A's Watch: %v, want ErrRefused", err)
		}
		_, err := tx.TxPipelined(actx, func(pipe redis.Pipeliner) error {
			pipe.Set(actx, p+"a", "a", 0)
			pipe.Set(bctx, p+"b-in-a-tx", "b", 0)
			return nil
		})
		return err
	}, p+"a")
	if !isRefused(err) {
		t.Errorf("A's transaction with B's command: %v, want ErrRefused", err)
	}
	if n := c.Exists(actx, p+"a", p+"b-in-a", p+"b-in-a-tx").Val(); n != 0 {
		t.Errorf("%d keys written in A's database", n)
	}
}

// TestOnConnectDoesNotRunOnTheRouter: the baseline's OnConnect runs on
// the connections of the baseline and of each sandbox client (under the
// sandbox policy, in the sandbox's database), never on the router's own
// connections, which start in a database of the range before they SELECT
// another: a write there would land in a database the router hands out.
func TestOnConnectDoesNotRunOnTheRouter(t *testing.T) {
	server(t)
	id := newID()
	key := "rrt:" + t.Name() + ":onconnect"
	var calls atomic.Int32
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB, OnConnect: func(ctx context.Context, cn *redis.Conn) error {
		calls.Add(1)
		return cn.Incr(ctx, key).Err()
	}})
	defer c.Close()
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, sctx := context.Background(), sandboxCtx(id)
	t.Cleanup(func() {
		r.Destroy(ctx, id)
		r.Close()
		for db := baseDB; db <= sandboxLast; db++ {
			raw(t, db).Del(ctx, key)
		}
	})
	if err := c.Set(sctx, "rrt:"+t.Name()+":k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for d := sandboxFirst; d <= sandboxLast; d++ {
		n, _ := raw(t, d).Get(ctx, key).Int64()
		total += n
		if n != 0 && d != db {
			t.Errorf("OnConnect wrote in database %d, not the sandbox's %d", d, db)
		}
	}
	if total != 1 || calls.Load() != 1 {
		t.Errorf("OnConnect ran %d times, wrote %d times in the range, want 1 and 1 (the sandbox's connection)", calls.Load(), total)
	}
}

// TestConnTakenBeforeNew: a Conn copies the client's hooks when it is
// taken (go-redis newConn: parentHooks.clone()), so one taken before New
// has no router, like a WithTimeout clone. Pinned as the package doc says.
func TestConnTakenBeforeNew(t *testing.T) {
	id := newID()
	c, p := baseline(t)
	early := c.Conn()
	defer early.Close()
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Destroy(context.Background(), id); r.Close() })
	if err := early.Set(sandboxCtx(id), p+"early", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if raw(t, baseDB).Get(context.Background(), p+"early").Val() != "sandbox" {
		t.Error("a Conn taken before New routed: go-redis copies later hooks into it now; update the package doc")
	}
	late := c.Conn()
	defer late.Close()
	if err := late.Set(sandboxCtx(id), p+"late", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if raw(t, baseDB).Exists(context.Background(), p+"late").Val() != 0 {
		t.Error("a Conn taken after New leaked")
	}
}

// TestRouterClosedWhileInUse: sandbox commands racing Close fail (ErrClosed
// or a closed client) or run in the sandbox; none reaches production.
func TestRouterClosedWhileInUse(t *testing.T) {
	id := newID()
	c, p := baseline(t)
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r2, _ := redisroute.New(raw(t, baseDB), dbs)
		r2.Destroy(context.Background(), id)
		r2.Close()
	})
	sctx := sandboxCtx(id)
	if err := c.Set(sctx, p+"warm", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var failed atomic.Int32
	go func() {
		defer close(done)
		for i := range 400 {
			if err := c.Incr(sctx, p+"n").Err(); err != nil {
				failed.Add(1)
				if !errors.Is(err, redisroute.ErrClosed) && !errors.Is(err, redis.ErrClosed) {
					t.Errorf("command %d: %v, want ErrClosed", i, err)
					return
				}
			}
		}
	}()
	for failed.Load() == 0 && c.Get(sctx, p+"n").Err() == nil {
		if n, _ := c.Get(sctx, p+"n").Int(); n > 20 {
			break
		}
	}
	r.Close()
	<-done
	if raw(t, baseDB).Exists(context.Background(), p+"n", p+"warm").Val() != 0 {
		t.Error("a sandbox command reached production while the router closed")
	}
	if failed.Load() == 0 {
		t.Error("no command failed after Close")
	}
}

// TestInvalidSandboxIDRefused: a sandbox ID that is not a valid one (the
// empty ID above all, which is also what a database without a marker
// "belongs" to) gets no database: it would otherwise be given the first
// unmarked database of the range, somebody else's data included.
func TestInvalidSandboxIDRefused(t *testing.T) {
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
	for _, id := range []string{"", "Not-A-Label", "a b", redisroute.MarkerKey} {
		sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id})
		v, err := c.Get(sctx, "rrt:someone-elses").Result()
		if !errors.Is(err, redisroute.ErrNoSandboxDatabase) || !errors.Is(err, propagation.ErrInvalidID) {
			t.Errorf("sandbox ID %q: GET = %q, %v; want ErrNoSandboxDatabase and propagation.ErrInvalidID", id, v, err)
		}
		if err := r.Destroy(ctx, id); !errors.Is(err, propagation.ErrInvalidID) {
			t.Errorf("Destroy(%q): %v, want propagation.ErrInvalidID", id, err)
		}
	}
	if v := foreign.Get(ctx, "rrt:someone-elses").Val(); v != "v" {
		t.Errorf("the foreign key is %q, want it kept", v)
	}
}

// TestProductionKeptOutOfTheRange: production commands through a routed
// client cannot reach the router's databases: production would see the
// sandboxes' keys, or flush their databases while they are in use (and a
// database freed that way can be claimed by a second sandbox while the
// first still writes to it).
func TestProductionKeptOutOfTheRange(t *testing.T) {
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
	c.Set(ctx, p+"k", "prod", 0)
	into := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, redisroute.ErrProductionIntoSandboxes) {
			t.Errorf("production %s: %v, want ErrProductionIntoSandboxes", what, err)
		}
	}
	cn := c.Conn()
	defer cn.Close()
	into("SELECT of the sandbox's database", cn.Select(ctx, db).Err())
	into("SELECT as raw text", cn.Do(ctx, "SELECT", strconv.Itoa(db)).Err())
	into("SELECT of an unreadable number", cn.Do(ctx, "select", "x").Err())
	// FLUSHALL and SWAPDB through the hook alone: were the check ever to
	// fail, on the wire they would flush or swap the shared test server.
	sent := 0
	process := redisroute.RouteHooks(r).ProcessHook(func(context.Context, redis.Cmder) error { sent++; return nil })
	into("FLUSHALL", process(ctx, redis.NewStatusCmd(ctx, "flushall")))
	into("FLUSHALL ASYNC", process(ctx, redis.NewStatusCmd(ctx, "FLUSHALL", "ASYNC")))
	into("SWAPDB", process(ctx, redis.NewStatusCmd(ctx, "swapdb", baseDB, db)))
	if sent != 0 {
		t.Errorf("%d refused commands passed to the next hook", sent)
	}
	into("MOVE", c.Move(ctx, p+"k", db).Err())
	into("COPY ... DB", c.Copy(ctx, p+"k", p+"k", db, true).Err())
	_, err = c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, p+"piped", "prod", 0)
		pipe.Move(ctx, p+"k", db)
		return nil
	})
	into("MOVE in a pipeline", err)
	if c.Exists(ctx, p+"piped").Val() != 0 {
		t.Error("a pipeline with a refused command sent the others")
	}
	if v := c.Get(sctx, p+"k").Val(); v != "sandbox" {
		t.Errorf("the sandbox's k = %q", v)
	}
	if raw(t, db).Get(ctx, redisroute.MarkerKey).Val() != id {
		t.Error("the sandbox's database lost its marker")
	}
	// Outside the range, production does as it likes.
	if err := cn.Select(ctx, baseDB).Err(); err != nil {
		t.Errorf("SELECT of the baseline's database: %v", err)
	}
	if err := c.Copy(ctx, p+"k", p+"k2", baseDB, true).Err(); err != nil {
		t.Errorf("COPY within the baseline's database: %v", err)
	}
}

// TestHookOrder: hooks added to the baseline before New see sandbox
// commands too (then the router sends them to the sandbox); hooks added
// after New see production commands only. A hook added before New that
// calls next with a context stripped of its sandbox cannot turn a sandbox
// command into production traffic: the router reads the command's own
// context.
func TestHookOrder(t *testing.T) {
	id := newID()
	c, p := baseline(t)
	before, after := &keyCounter{key: p + "k"}, &keyCounter{key: p + "k"}
	c.AddHook(before)
	c.AddHook(stripSandbox{})
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Destroy(context.Background(), id); r.Close() })
	c.AddHook(after)
	ctx, sctx := context.Background(), sandboxCtx(id)
	if err := c.Set(ctx, p+"k", "prod", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The stripping hook hides the sandbox from the router's view of the
	// call; the command's own context still names it.
	if err := c.Set(sctx, p+"k", "sandbox", 0).Err(); !isRefused(err) {
		t.Errorf("a sandbox command whose context a hook stripped: %v, want ErrRefused", err)
	}
	if v := raw(t, baseDB).Get(ctx, p+"k").Val(); v != "prod" {
		t.Errorf("production k = %q", v)
	}
	if before.n.Load() != 2 || after.n.Load() != 1 {
		t.Errorf("hooks saw %d (before New) and %d (after New) commands on the key, want 2 and 1", before.n.Load(), after.n.Load())
	}
}

// keyCounter counts the commands on key it sees.
type keyCounter struct {
	key string
	n   atomic.Int64
}

func (h *keyCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *keyCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 1 && a[1] == h.key {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *keyCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// stripSandbox is a hook that calls next with a context without the
// sandbox, as a careless tracing hook might.
type stripSandbox struct{}

func (stripSandbox) DialHook(next redis.DialHook) redis.DialHook { return next }
func (stripSandbox) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return next(propagation.ContextWithoutSandbox(ctx), cmd)
	}
}
func (stripSandbox) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return next(propagation.ContextWithoutSandbox(ctx), cmds)
	}
}
