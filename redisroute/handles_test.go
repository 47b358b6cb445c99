package redisroute_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/redisroute"
)

// Tests of the other handles a baseline client hands out: WithTimeout
// clones, full-duplex AutoPipeliners, connected PubSubs, copies built from
// its Options.

// TestWithTimeoutCloneHasNoHooks: go-redis 9.23's Client.WithTimeout
// (redis.go) copies the Client, replaces its *baseClient with
// baseClient.withTimeout, which calls baseClient.clone: a new baseClient
// literal that copies pools and options but not the embedded hooksMixin.
// Client.init then calls initHooks, which keeps the old hook slice only
// when hs.state is set, and on the fresh baseClient it is nil: the clone
// starts with no hook at all, whenever it is taken. Neither the router nor
// the guard sees its commands, and nothing else on its path does: the
// pools it shares were built with the parent's dial hook, but dial with
// context.Background() (internal/pool ConnPool.queuedNewConn), and
// Options.Limiter.Allow takes no context. The test pins that
// hole, which the package doc states: if it fails, go-redis has changed and
// the doc must change with it. No go-redis issue reports it (searched
// 2026-12); the nearest are redis/go-redis#2561 (a dial hook added after
// WithTimeout) and #3267 (Conn() lost the hooks, fixed by #3320, which is
// why a Conn has them). Router.WithTimeout is the routed clone
// (TestRouterWithTimeout).
func TestWithTimeoutCloneHasNoHooks(t *testing.T) {
	id := newID()
	c, p, r := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	var hooked hookCounter
	c.AddHook(&hooked)
	before := c.WithTimeout(2 * time.Second) // shares c's pools: not closed
	c2, p2 := baseline(t)
	if err := redisroute.Guard(c2); err != nil {
		t.Fatal(err)
	}
	guarded := c2.WithTimeout(2 * time.Second)

	for name, clone := range map[string]*redis.Client{"routed": before, "guarded": guarded} {
		prefix := p
		if name == "guarded" {
			prefix = p2
		}
		if err := clone.Set(sctx, prefix+"clone", "sandbox", 0).Err(); err != nil {
			t.Fatalf("%s clone: %v", name, err)
		}
		if _, err := clone.TxPipelined(sctx, func(pipe redis.Pipeliner) error {
			pipe.Set(sctx, prefix+"clone-tx", "sandbox", 0)
			return nil
		}); err != nil {
			t.Fatalf("%s clone: %v", name, err)
		}
		if n := raw(t, baseDB).Exists(ctx, prefix+"clone", prefix+"clone-tx").Val(); n != 2 {
			t.Errorf("%s clone: %d of 2 sandbox writes in production; go-redis now gives WithTimeout clones their parent's hooks: update the package doc", name, n)
		}
	}
	if hooked.n.Load() != 0 {
		t.Errorf("a hook of the parent ran %d times for the clone", hooked.n.Load())
	}
	// The client itself still routes.
	if err := c.Set(sctx, p+"routed", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db, _ := r.Database(sctx)
	if raw(t, baseDB).Exists(ctx, p+"routed").Val() != 0 || raw(t, db).Exists(ctx, p+"routed").Val() != 1 {
		t.Error("the client itself did not route")
	}
}

// TestRouterWithTimeout: Router.WithTimeout is the routed WithTimeout
// clone: its production commands run on the baseline's database with the
// clone's timeouts, its sandbox commands (single, pipelined,
// transactions) in the sandbox's database, its refusals are the router's,
// and its AutoPipeliners are pinned to half duplex. A guarded client's
// clone is made safe by guarding it (Guard(c.WithTimeout(d))).
func TestRouterWithTimeout(t *testing.T) {
	id := newID()
	_, p, r := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	clone, err := r.WithTimeout(1500 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got := clone.Options().ReadTimeout; got != 1500*time.Millisecond {
		t.Errorf("the clone's ReadTimeout is %v", got)
	}
	// One clone a timeout: each holds two AutoPipeliner goroutines until
	// the baseline closes.
	if again, err := r.WithTimeout(1500 * time.Millisecond); err != nil || again != clone {
		t.Errorf("a second WithTimeout of the same timeout: %p %v, want the same client %p", again, err, clone)
	}
	if other, err := r.WithTimeout(time.Second); err != nil || other == clone || other.Options().ReadTimeout != time.Second {
		t.Errorf("WithTimeout of another timeout: %v, want another client", err)
	}
	if err := clone.Set(ctx, p+"prod", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := clone.Set(sctx, p+"sandbox", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := clone.TxPipelined(sctx, func(pipe redis.Pipeliner) error {
		pipe.Set(sctx, p+"sandbox-tx", "sandbox", 0)
		pipe.Incr(sctx, p+"n")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := clone.Eval(sctx, "return 1", nil).Err(); !isRefused(err) {
		t.Errorf("EVAL through the routed clone: %v, want ErrRefused", err)
	}
	if err := clone.Do(ctx, "select", sandboxFirst).Err(); !errors.Is(err, redisroute.ErrProductionIntoSandboxes) {
		t.Errorf("production SELECT of a sandbox's database through the routed clone: %v, want ErrProductionIntoSandboxes", err)
	}
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	base, sb := raw(t, baseDB), raw(t, db)
	if n := base.Exists(ctx, p+"sandbox", p+"sandbox-tx", p+"n").Val(); n != 0 {
		t.Errorf("%d sandbox writes through the routed clone reached production", n)
	}
	if n := sb.Exists(ctx, p+"sandbox", p+"sandbox-tx", p+"n").Val(); n != 3 {
		t.Errorf("%d of 3 sandbox writes in the sandbox's database", n)
	}
	if base.Get(ctx, p+"prod").Val() != "v" || sb.Exists(ctx, p+"prod").Val() != 0 {
		t.Error("the clone's production write is not (only) in production")
	}
	ap, err := clone.AsyncAutoPipelineWithOptions(&redis.AutoPipelineOptions{FullDuplex: true})
	if err != nil {
		t.Fatal(err)
	}
	if ap.Config().FullDuplex {
		t.Error("the routed clone built a full-duplex AutoPipeliner")
	}

	// A guarded client's clone, guarded.
	g, gp := baseline(t)
	if err := redisroute.Guard(g); err != nil {
		t.Fatal(err)
	}
	gclone := g.WithTimeout(time.Second)
	if err := redisroute.Guard(gclone); err != nil {
		t.Fatal(err)
	}
	if err := gclone.Set(sctx, gp+"k", "sandbox", 0).Err(); !errors.Is(err, redisroute.ErrSandboxOnBaseline) {
		t.Errorf("a guarded clone: %v, want ErrSandboxOnBaseline", err)
	}
	if base.Exists(ctx, gp+"k").Val() != 0 {
		t.Error("a guarded clone wrote the sandbox's key to production")
	}

	c2, _ := baseline(t)
	r2, err := redisroute.New(c2, dbs)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.WithTimeout(time.Second); !errors.Is(err, redisroute.ErrClosed) {
		t.Errorf("WithTimeout on a closed router: %v, want ErrClosed", err)
	}
}

// TestWithTimeoutClonesAreBounded: Router.WithTimeout keeps one clone per
// timeout, each with two AutoPipeliner goroutines and their queues until the
// baseline closes (Router.Close does not stop them: a clone whose pinned
// AutoPipeliners are closed builds a full-duplex one on request). A timeout
// computed per call (time.Until(deadline), the usual idiom) would add a
// clone per call without bound: past MaxTimeoutClones distinct timeouts
// WithTimeout refuses (ErrConfig) and nothing grows. Concurrent callers of
// one timeout share its clone.
func TestWithTimeoutClonesAreBounded(t *testing.T) {
	_, _, r := route(t, nil)
	timeout := func(i int) time.Duration { return time.Second + time.Duration(i)*time.Millisecond }
	got := make([][]*redis.Client, 4)
	var wg sync.WaitGroup
	for g := range got {
		got[g] = make([]*redis.Client, redisroute.MaxTimeoutClones)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range got[g] {
				c, err := r.WithTimeout(timeout(i))
				if err != nil {
					t.Errorf("WithTimeout(%v), clone %d of %d: %v", timeout(i), i+1, redisroute.MaxTimeoutClones, err)
				}
				got[g][i] = c
			}
		}()
	}
	wg.Wait()
	for i := range got[0] {
		for g := range got {
			if got[g][i] != got[0][i] || got[g][i] == nil {
				t.Fatalf("concurrent WithTimeout(%v) returned different clones", timeout(i))
			}
		}
	}
	before := runtime.NumGoroutine()
	for i := redisroute.MaxTimeoutClones; i < 5*redisroute.MaxTimeoutClones; i++ {
		if c, err := r.WithTimeout(timeout(i)); !errors.Is(err, redisroute.ErrConfig) || c != nil {
			t.Fatalf("distinct timeout %d (past %d): %v, want ErrConfig", i+1, redisroute.MaxTimeoutClones, err)
		}
	}
	if after := runtime.NumGoroutine(); after > before+4 {
		t.Errorf("goroutines grew from %d to %d over %d refused timeouts", before, after, 4*redisroute.MaxTimeoutClones)
	}
	if c, err := r.WithTimeout(timeout(0)); err != nil || c != got[0][0] {
		t.Errorf("a kept timeout past the bound: %v, want its clone", err)
	}
}

// taggedStringCmd is a command type of the caller's.
type taggedStringCmd struct{ *redis.StringCmd }

// hookCounter counts the commands it sees.
type hookCounter struct{ n atomic.Int64 }

func (h *hookCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *hookCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *hookCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

func TestFullDuplexOptionsRefused(t *testing.T) {
	server(t)
	fd := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB, AutoPipelineOptions: &redis.AutoPipelineOptions{FullDuplex: true}})
	defer fd.Close()
	if _, err := redisroute.New(fd, dbs); !errors.Is(err, redisroute.ErrConfig) || !strings.Contains(err.Error(), "FullDuplex") {
		t.Errorf("New on a full-duplex client: %v, want ErrConfig naming FullDuplex", err)
	}
	if err := redisroute.Guard(fd); !errors.Is(err, redisroute.ErrConfig) || !strings.Contains(err.Error(), "FullDuplex") {
		t.Errorf("Guard on a full-duplex client: %v, want ErrConfig naming FullDuplex", err)
	}
	// Without a pipeline pool go-redis cannot run full duplex at all: it
	// falls back to half-duplex batches, which the hooks gate.
	hd := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB, PipelinePoolSize: -1, AutoPipelineOptions: &redis.AutoPipelineOptions{FullDuplex: true}})
	defer hd.Close()
	r, err := redisroute.New(hd, dbs)
	if err != nil {
		t.Fatalf("New without a pipeline pool: %v", err)
	}
	defer r.Close()
	ap, err := hd.AsyncAutoPipeline()
	if err != nil {
		t.Fatal(err)
	}
	defer ap.Close()
	if ap.Config().FullDuplex {
		t.Fatal("go-redis runs full duplex without a pipeline pool: the exemption in New is wrong")
	}
	if err := redisroute.Guard(hd); err != nil {
		t.Errorf("Guard without a pipeline pool: %v", err)
	}
}

// TestFullDuplexLeakIsCaught: an AutoPipeliner built in full-duplex mode
// after New writes a sandbox command to production before any hook runs
// (go-redis autopipeline_fullduplex.go: fdEngine.submit queues the write,
// then starts hostHook). The router cannot stop it; it finds out, fails
// the command with ErrLeaked, audits it, and does not run it a second time
// in the sandbox. The test also pins the leak itself: if go-redis ever
// gates full-duplex writes on the hooks, it fails and the doc must change.
func TestFullDuplexLeakIsCaught(t *testing.T) {
	for _, face := range []string{"async", "blocking"} {
		t.Run(face, func(t *testing.T) {
			id := newID()
			rec, logger := audittest.New()
			c, p, r := route(t, []string{id}, redisroute.WithLogger(logger))
			ctx, sctx := context.Background(), sandboxCtx(id)
			// The sandbox has its database before the leak.
			if err := c.Set(sctx, p+"routed", "sandbox", 0).Err(); err != nil {
				t.Fatal(err)
			}
			ap := fullDuplexPipeliner(t, c, face)
			if err := ap.Set(ctx, p+"prod", "v", 0).Err(); err != nil {
				t.Fatalf("production through the full-duplex AutoPipeliner: %v", err)
			}
			set := ap.Set(sctx, p+"leak", "sandbox", 0)
			if err := set.Err(); !errors.Is(err, redisroute.ErrLeaked) || isRefused(err) {
				t.Errorf("sandbox SET through a full-duplex AutoPipeliner: %v, want ErrLeaked (and not ErrRefused: it was sent)", err)
			}
			incr := ap.Incr(sctx, p+"n")
			if err := incr.Err(); !errors.Is(err, redisroute.ErrLeaked) {
				t.Errorf("sandbox INCR: %v, want ErrLeaked", err)
			}
			// A command built with the sandbox's context, sent with production's.
			get := redis.NewStringCmd(sctx, "get", p+"prod")
			_ = ap.Process(ctx, get)
			if !errors.Is(get.Err(), redisroute.ErrLeaked) {
				t.Errorf("sandbox-built GET sent with a production context: %v, want ErrLeaked", get.Err())
			}
			// The same, as a command type of the caller's.
			wget := &taggedStringCmd{redis.NewStringCmd(sctx, "get", p+"prod")}
			_ = ap.Process(ctx, wget)
			if !errors.Is(wget.Err(), redisroute.ErrLeaked) {
				t.Errorf("sandbox-built wrapped GET sent with a production context: %v, want ErrLeaked", wget.Err())
			}
			if v := wget.Val(); v != "" {
				t.Errorf("a leaked wrapped GET holds production's value %q", v)
			}
			// And as one that holds its command through an embedded Cmder.
			inner := redis.NewStringCmd(sctx, "get", p+"prod")
			_ = ap.Process(ctx, &ifaceCmd{inner})
			if !errors.Is(inner.Err(), redisroute.ErrLeaked) {
				t.Errorf("sandbox-built GET behind an embedded Cmder, sent with a production context: %v, want ErrLeaked", inner.Err())
			}
			if v := inner.Val(); v != "" {
				t.Errorf("a leaked GET behind an embedded Cmder holds production's value %q", v)
			}
			// Production's reply is not handed to the sandbox.
			if v := get.Val(); v != "" {
				t.Errorf("a leaked GET holds production's value %q", v)
			}
			if n := incr.Val(); n != 0 {
				t.Errorf("a leaked INCR holds production's counter %d", n)
			}
			if v := ap.Get(sctx, p+"prod").Val(); v != "" {
				t.Errorf("a leaked sandbox GET returned production's value %q", v)
			}
			if keys, cursor := ap.Scan(sctx, 0, p+"*", 100).Val(); len(keys) != 0 || cursor != 0 {
				t.Errorf("a leaked SCAN returned production's keys %v", keys)
			}
			db, err := r.Database(sctx)
			if err != nil {
				t.Fatal(err)
			}
			base, sb := raw(t, baseDB), raw(t, db)
			if v := base.Get(ctx, p+"leak").Val(); v != "sandbox" {
				t.Errorf("production holds %q for the leaked SET: go-redis no longer writes before the hooks; update the doc", v)
			}
			if sb.Exists(ctx, p+"leak", p+"n").Val() != 0 {
				t.Error("the leaked commands ran a second time in the sandbox")
			}
			if v := base.Get(ctx, p+"prod").Val(); v != "v" {
				t.Errorf("production value %q", v)
			}
			if n := count(rec.Records(), func(m map[string]string) bool {
				return m[audit.KeyDecision] == string(audit.Rejected) && m[audit.KeyID] == id &&
					strings.HasPrefix(m[audit.KeyReason], redisroute.ErrLeaked.Error())
			}); n != 7 {
				t.Errorf("%d rejected records naming the leak, want 7", n)
			}
			// Commands that go-redis diverts off the full-duplex stream (Do,
			// blocking commands) run through the hooks first, and route.
			if err := ap.Do(sctx, "set", p+"diverted", "sandbox").Err(); err != nil {
				t.Errorf("Do through the AutoPipeliner: %v", err)
			}
			c.RPush(sctx, p+"jobs", "sandbox-job")
			if v, err := ap.BLPop(sctx, time.Second, p+"jobs").Result(); err != nil || v[1] != "sandbox-job" {
				t.Errorf("BLPOP through the AutoPipeliner: %v %v", v, err)
			}
			if base.Exists(ctx, p+"diverted").Val() != 0 || sb.Get(ctx, p+"diverted").Val() != "sandbox" {
				t.Error("a diverted Do did not route to the sandbox")
			}
		})
	}
}

// TestFullDuplexSessionOpenedBySandbox: a full-duplex engine opens its
// connection with the context of the command that starts its session
// (fdEngine.attempt: initCtx from the first queued command), and that
// initialisation (HELLO, SELECT, CLIENT SETINFO) runs the hooks on the
// engine's goroutine. With a sandbox context they refuse it, so a sandbox
// command that opens a session is not sent at all. Only a fresh
// connection is initialised: a session on a connection initialised before
// leaks, as TestFullDuplexLeakIsCaught shows.
func TestFullDuplexSessionOpenedBySandbox(t *testing.T) {
	for _, mode := range []string{"router", "guard"} {
		t.Run(mode, func(t *testing.T) {
			id := newID()
			var c *redis.Client
			var p string
			if mode == "router" {
				c, p, _ = route(t, []string{id})
			} else {
				c, p = baseline(t)
				if err := redisroute.Guard(c); err != nil {
					t.Fatal(err)
				}
			}
			ctx, sctx := context.Background(), sandboxCtx(id)
			ap := fullDuplexPipeliner(t, c, "async")
			err := ap.Set(sctx, p+"first", "sandbox", 0).Err()
			if !isRefused(err) || errors.Is(err, redisroute.ErrLeaked) {
				t.Errorf("a sandbox command opening a full-duplex session: %v, want ErrRefused (not sent)", err)
			}
			if raw(t, baseDB).Exists(ctx, p+"first").Val() != 0 {
				t.Error("the refused command reached production")
			}
			// The engine recovers for production.
			if err := ap.Set(ctx, p+"prod", "v", 0).Err(); err != nil {
				t.Errorf("production after the refused session: %v", err)
			}
			err = ap.Set(sctx, p+"second", "sandbox", 0).Err()
			if !errors.Is(err, redisroute.ErrLeaked) {
				t.Errorf("a sandbox command in a production session: %v, want ErrLeaked", err)
			}
			if mode == "guard" && !errors.Is(err, redisroute.ErrSandboxOnBaseline) {
				t.Errorf("guard: %v, want ErrSandboxOnBaseline too", err)
			}
			if raw(t, baseDB).Get(ctx, p+"second").Val() != "sandbox" {
				t.Error("the leaked command is not in production: go-redis no longer writes before the hooks; update the doc")
			}
		})
	}
}

func TestFullDuplexLeakIsCaughtByGuard(t *testing.T) {
	c, p := baseline(t)
	rec, logger := audittest.New()
	if err := redisroute.Guard(c, redisroute.WithLogger(logger)); err != nil {
		t.Fatal(err)
	}
	ap := fullDuplexPipeliner(t, c, "async")
	ctx, sctx := context.Background(), sandboxCtx(newID())
	if err := ap.Ping(ctx).Err(); err != nil { // opens the session
		t.Fatal(err)
	}
	err := ap.Set(sctx, p+"leak", "sandbox", 0).Err()
	if !errors.Is(err, redisroute.ErrLeaked) || !errors.Is(err, redisroute.ErrSandboxOnBaseline) {
		t.Errorf("sandbox SET through a guarded full-duplex AutoPipeliner: %v, want ErrLeaked and ErrSandboxOnBaseline", err)
	}
	if v := c.Get(ctx, p+"leak").Val(); v != "sandbox" {
		t.Errorf("production holds %q: go-redis no longer writes before the hooks; update the doc", v)
	}
	if n := count(rec.Records(), func(m map[string]string) bool {
		return m[audit.KeyDecision] == string(audit.Rejected) && strings.Contains(m[audit.KeyReason], redisroute.ErrLeaked.Error())
	}); n != 1 {
		t.Errorf("%d rejected records naming the leak, want 1", n)
	}
}

// fullDuplexPipeliner returns c's full-duplex AutoPipeliner of face
// (async or blocking), closed at the end of t. New and Guard pin c's
// cached AutoPipeliners to half duplex (TestFullDuplexPinnedAway): the one
// way left to a full-duplex engine is to close the pinned instance first,
// which this does.
func fullDuplexPipeliner(t *testing.T, c *redis.Client, face string) *redis.AutoPipeliner {
	t.Helper()
	opts := &redis.AutoPipelineOptions{FullDuplex: true}
	get := c.AutoPipelineWithOptions
	if face == "async" {
		get = c.AsyncAutoPipelineWithOptions
	}
	pinned, err := get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if pinned.Config().FullDuplex {
		t.Fatal("the cached AutoPipeliner already runs full duplex")
	}
	if err := pinned.Close(); err != nil {
		t.Fatal(err)
	}
	ap, err := get(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ap.Close() })
	if !ap.Config().FullDuplex {
		t.Fatal("the AutoPipeliner does not run full duplex")
	}
	return ap
}

// TestFullDuplexPinnedAway: New and Guard build the client's two cached
// AutoPipeliners in half-duplex mode, so that a later
// AutoPipelineWithOptions or AsyncAutoPipelineWithOptions asking for
// FullDuplex gets them (go-redis caches one instance a face and the first
// call's config wins: getOrCreateAutoPipeliner) instead of a full-duplex
// engine that writes before the hooks run. A sandbox command through them
// is routed (router) or refused (guard), and never reaches production.
func TestFullDuplexPinnedAway(t *testing.T) {
	for _, mode := range []string{"router", "guard"} {
		for _, face := range []string{"async", "blocking"} {
			t.Run(mode+"/"+face, func(t *testing.T) {
				id := newID()
				var c *redis.Client
				var p string
				var r *redisroute.Router
				if mode == "router" {
					c, p, r = route(t, []string{id})
				} else {
					c, p = baseline(t)
					if err := redisroute.Guard(c); err != nil {
						t.Fatal(err)
					}
				}
				ctx, sctx := context.Background(), sandboxCtx(id)
				get := c.AutoPipelineWithOptions
				if face == "async" {
					get = c.AsyncAutoPipelineWithOptions
				}
				ap, err := get(&redis.AutoPipelineOptions{FullDuplex: true})
				if err != nil {
					t.Fatal(err)
				}
				if ap.Config().FullDuplex {
					t.Error("AutoPipelineWithOptions(FullDuplex) built a full-duplex engine after " + mode)
				}
				if err := ap.Set(ctx, p+"prod", "v", 0).Err(); err != nil {
					t.Fatalf("production through the AutoPipeliner: %v", err)
				}
				err = ap.Set(sctx, p+"sandbox", "sandbox", 0).Err()
				if errors.Is(err, redisroute.ErrLeaked) {
					t.Fatalf("sandbox SET: %v: it ran in production", err)
				}
				base := raw(t, baseDB)
				if base.Exists(ctx, p+"sandbox").Val() != 0 {
					t.Error("the sandbox's SET reached production")
				}
				if base.Get(ctx, p+"prod").Val() != "v" {
					t.Error("production's SET is not in production")
				}
				if mode == "guard" {
					if !errors.Is(err, redisroute.ErrSandboxOnBaseline) {
						t.Errorf("sandbox SET through a guarded client's AutoPipeliner: %v, want ErrSandboxOnBaseline", err)
					}
					return
				}
				// The batch sends with context.Background(): the router
				// refuses the sandbox's command (it does not route
				// AutoPipeliner batches), as for any half-duplex batch.
				if !isRefused(err) {
					t.Errorf("sandbox SET through a routed client's AutoPipeliner: %v, want ErrRefused", err)
				}
				if _, err := r.Database(sctx); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestFullDuplexBuiltBeforeRefused: a full-duplex AutoPipeliner built
// before New or Guard stays cached in the client, and keeps writing before
// the hooks run: New and Guard refuse the client (ErrConfig), and accept
// it once that instance is closed.
func TestFullDuplexBuiltBeforeRefused(t *testing.T) {
	for _, mode := range []string{"router", "guard"} {
		t.Run(mode, func(t *testing.T) {
			c, _ := baseline(t)
			ap, err := c.AsyncAutoPipelineWithOptions(&redis.AutoPipelineOptions{FullDuplex: true})
			if err != nil {
				t.Fatal(err)
			}
			install := func() error { return redisroute.Guard(c) }
			if mode == "router" {
				install = func() error {
					r, err := redisroute.New(c, dbs)
					if err == nil {
						r.Close()
					}
					return err
				}
			}
			if err := install(); !errors.Is(err, redisroute.ErrConfig) || !strings.Contains(err.Error(), "full duplex") {
				t.Errorf("%s on a client with a full-duplex AutoPipeliner: %v, want ErrConfig", mode, err)
			}
			ap.Close()
			if err := install(); err != nil {
				t.Errorf("%s once it is closed: %v", mode, err)
			}
		})
	}
}

// TestFullDuplexRequestRacingInstall: a goroutine asks for a full-duplex
// AutoPipeliner while New or Guard runs. go-redis builds each face under
// the client's mutex, so one of the two comes first: either the request
// gets the pinned half-duplex instance, or New and Guard find the
// full-duplex one and refuse the client. Never both an installed router
// or guard and a full-duplex engine.
func TestFullDuplexRequestRacingInstall(t *testing.T) {
	server(t)
	refused := 0
	for i := range 40 {
		c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB})
		var ap *redis.AutoPipeliner
		var apErr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			get := c.AsyncAutoPipelineWithOptions
			if i%2 == 1 {
				get = c.AutoPipelineWithOptions
			}
			ap, apErr = get(&redis.AutoPipelineOptions{FullDuplex: true})
		}()
		var err error
		var r *redisroute.Router
		if i%4 < 2 {
			r, err = redisroute.New(c, dbs)
		} else {
			err = redisroute.Guard(c)
		}
		wg.Wait()
		if apErr != nil {
			t.Fatal(apErr)
		}
		switch {
		case err == nil && ap.Config().FullDuplex:
			t.Errorf("round %d: installed, and a full-duplex AutoPipeliner was built", i)
		case err != nil && !errors.Is(err, redisroute.ErrConfig):
			t.Errorf("round %d: %v, want nil or ErrConfig", i, err)
		case err != nil:
			refused++
		}
		if r != nil {
			r.Close()
		}
		c.Close()
	}
	t.Logf("%d of 40 installs refused (the full-duplex request came first)", refused)
}

// TestClosedClientRefused: New and Guard cannot pin the AutoPipeliners of
// a closed client (go-redis returns ErrClosed), and say so.
func TestClosedClientRefused(t *testing.T) {
	server(t)
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB})
	c.Close()
	if _, err := redisroute.New(c, dbs); !errors.Is(err, redisroute.ErrConfig) || !errors.Is(err, redis.ErrClosed) {
		t.Errorf("New on a closed client: %v, want ErrConfig and redis.ErrClosed", err)
	}
	if err := redisroute.Guard(c); !errors.Is(err, redisroute.ErrConfig) || !errors.Is(err, redis.ErrClosed) {
		t.Errorf("Guard on a closed client: %v, want ErrConfig and redis.ErrClosed", err)
	}
}

// TestConnectedPubSubIsNotSeen: a PubSub connected with a production
// context writes later SUBSCRIBE, PSUBSCRIBE and PING straight to its
// connection (go-redis pubsub.go: subscribe -> conn returns c.cn ->
// _subscribe -> writeCmd; Ping -> writeCmd), with no hook on the way: the
// only hooks a PubSub runs are the dial hook and the connection's
// initialisation (HELLO, AUTH, SELECT), when it connects. The test pins
// that hole, which the package doc states; if it fails, go-redis has
// changed and the doc (and perhaps the router) must change with it. A
// PubSub that is not connected yet dials with the sandbox's context, and
// that is refused.
func TestConnectedPubSubIsNotSeen(t *testing.T) {
	id := newID()
	c, p, _ := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	channel := p + "orders"

	ps := c.Subscribe(ctx, channel)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ps.Subscribe(sctx, channel+"-sandbox"); err != nil {
		t.Errorf("SUBSCRIBE with a sandbox context on a connected PubSub: %v; go-redis now runs a hook here: update the package doc", err)
	}
	if err := ps.PSubscribe(sctx, channel+"-p*"); err != nil {
		t.Errorf("PSUBSCRIBE on a connected PubSub: %v", err)
	}
	if err := ps.Ping(sctx); err != nil {
		t.Errorf("PING on a connected PubSub: %v", err)
	}
	// The sandbox's subscription receives production's messages.
	got := map[string]bool{}
	for range 3 { // the two subscribe confirmations and the pong come first
		if _, err := ps.ReceiveTimeout(ctx, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Publish(ctx, channel+"-sandbox", "from production").Err(); err != nil {
		t.Fatal(err)
	}
	if m, err := ps.ReceiveTimeout(ctx, 2*time.Second); err == nil {
		if msg, ok := m.(*redis.Message); ok {
			got[msg.Channel] = true
		}
	}
	if !got[channel+"-sandbox"] {
		t.Error("the sandbox's subscription on a connected PubSub did not reach production's channel; update the package doc")
	}

	// Not connected yet: the first subscription dials with its context.
	empty := c.Subscribe(ctx)
	defer empty.Close()
	if err := empty.Subscribe(sctx, channel); !isRefused(err) {
		t.Errorf("first SUBSCRIBE of an empty PubSub with a sandbox context: %v, want ErrRefused", err)
	}
}

// TestCopiesOfTheOptions: a client built from the baseline's options
// (redis.NewClient(c.Options())) is a new client with no hooks: no hook of
// the baseline can see it. The test pins what the package doc says.
func TestCopiesOfTheOptions(t *testing.T) {
	id := newID()
	c, p, _ := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	copied := redis.NewClient(c.Options())
	defer copied.Close()
	if err := copied.Set(sctx, p+"k", "sandbox", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, p+"k").Val(); v != "sandbox" {
		t.Errorf("production holds %q: a copy of the options now routes; update the doc", v)
	}
}
