package dbroute_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Attacks on draining pools (#18): a pool whose turn is over drains while
// other sandboxes wait for a slot, and takes calls again if it has not
// drained within a turn.

const drainInsert = "INSERT INTO items (owner) VALUES ($1)"

// oneSlot returns the test server, a router with one pool slot, the given
// turn, no idle timeout and the returned test clock, over one test
// database (named name) that sandboxes a and b share, and the router's
// waited (see waitCounter).
func oneSlot(t *testing.T, name string, turn time.Duration) (*pgtest.Env, *dbroute.Router, *clocktest.Clock, func(int64)) {
	t.Helper()
	e := pgtest.Server(t)
	dsn := e.Target(t, name)
	p, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New()
	withMeter, waited := waitCounter(t)
	r := e.Router(t, p, dbroute.WithMaxPools(1), dbroute.WithPoolTurn(turn), dbroute.WithIdleTimeout(0), dbroute.WithClock(clk.Now), withMeter)
	return e, r, clk, waited
}

// waitCounter returns a meter provider option for a router and waited,
// which returns once n calls in all have started to wait for a pool slot
// of that router (the pool-limit metric's "waited" outcome, counted as a
// call joins the queue). The tests wait for it after starting a call in
// the background, where they slept (100 ms) before: on a loaded machine
// the call's goroutine had not queued yet, and a call meant to wait ran
// or was cancelled before it did.
func waitCounter(t *testing.T) (dbroute.RouterOption, func(n int64)) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	return dbroute.WithMeterProvider(mp), func(n int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for poolLimitCounts(t, rd)[dbroute.OutcomeWaited] < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d calls waited for a pool slot, want %d", poolLimitCounts(t, rd)[dbroute.OutcomeWaited], n)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// execAsync runs one insert for ctx's sandbox in the background.
func execAsync(r *dbroute.Router, ctx context.Context, owner string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := r.Exec(ctx, drainInsert, owner)
		done <- err
	}()
	return done
}

// within waits for ch, failing the test if it takes longer than d.
func within(t *testing.T, what string, ch <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %v", what, d)
		return nil
	}
}

// settle gives a call just started the time to do what it must not (wait
// for a slot where it must not): where it is to wait, the tests wait for
// that (waitCounter) instead.
func settle() { time.Sleep(100 * time.Millisecond) }

// TestAttackDrainCancelWhileQueued: calls queued behind a draining pool
// (another sandbox's and the holder's own) whose contexts end get
// ErrPoolLimit at once, and leave no slot behind: afterwards the holder's
// pool takes calls again and the other sandbox gets the slot once it is
// free.
func TestAttackDrainCancelWhileQueued(t *testing.T) {
	t.Parallel()
	e, r, clk, waited := oneSlot(t, "cancel", time.Minute)
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	if _, err := tx.Exec(ctxA, drainInsert, "a-tx"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	for round := range 3 {
		cb, cancelB := context.WithCancel(ctxB)
		doneB := execAsync(r, cb, "b-cancelled")
		// b waits, a drains. Each sandbox's first call queues an open
		// that outlives the call (it is shared): the calls of later
		// rounds join it and count no wait of their own.
		waited(1)
		ca, cancelA := context.WithCancel(ctxA)
		doneA := execAsync(r, ca, "a-cancelled")
		waited(2)
		cancelA()
		if err := within(t, "a's cancelled call", doneA, 5*time.Second); !errors.Is(err, dbroute.ErrPoolLimit) {
			t.Fatalf("round %d: a's cancelled call: %v, want ErrPoolLimit", round, err)
		}
		cancelB()
		if err := within(t, "b's cancelled call", doneB, 5*time.Second); !errors.Is(err, dbroute.ErrPoolLimit) {
			t.Fatalf("round %d: b's cancelled call: %v, want ErrPoolLimit", round, err)
		}
	}
	// Nobody waits any more: the holder's own call must not wait for a
	// turn of a drain nobody needs, and surely not for ever.
	ca, cancel := context.WithTimeout(ctxA, 10*time.Second)
	defer cancel()
	doneA := execAsync(r, ca, "a-after")
	settle()
	clk.Advance(2 * time.Minute) // at most one turn
	if err := within(t, "a's call after the cancellations", doneA, 15*time.Second); err != nil {
		t.Fatalf("a's call after the cancellations: %v", err)
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	cb, cancel := context.WithTimeout(ctxB, 10*time.Second)
	defer cancel()
	if _, err := r.Exec(cb, drainInsert, "b"); err != nil {
		t.Fatalf("b once a is free and its turn over: %v", err)
	}
	if got := r.OpenPools(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("open pools = %v, want [b]", got)
	}
	dsnT, table := e.TargetItems("cancel")
	if n := pgtest.Count(t, dsnT, "SELECT count(*) FROM "+table+" WHERE owner IN ('a-tx', 'a-after', 'b')"); n != 3 {
		t.Errorf("%d rows, want 3", n)
	}
}

// TestAttackDrainClose: Router.Close while a pool held by a transaction
// drains and calls of both sandboxes wait: the waiting calls end at once
// with ErrClosed, the transaction keeps working until it commits (its
// pool is not closed under it), and Close returns once it has.
func TestAttackDrainClose(t *testing.T) {
	t.Parallel()
	e, r, clk, waited := oneSlot(t, "close", time.Minute)
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	clk.Advance(2 * time.Minute)
	doneB := execAsync(r, ctxB, "b")
	waited(1)
	doneA := execAsync(r, ctxA, "a-queued")
	waited(2)
	closed := make(chan error, 1)
	go func() { r.Close(); closed <- nil }()
	for _, c := range []struct {
		who  string
		done <-chan error
	}{{"a", doneA}, {"b", doneB}} {
		if err := within(t, c.who+"'s waiting call after Close", c.done, 5*time.Second); !errors.Is(err, dbroute.ErrClosed) {
			t.Errorf("%s's waiting call after Close: %v, want ErrClosed", c.who, err)
		}
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a transaction was open on a pool")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := tx.Exec(ctxA, drainInsert, "a-tx"); err != nil {
		t.Fatalf("the transaction after Close began: %v", err)
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
	within(t, "Close after the commit", closed, 10*time.Second)
	if _, err := r.Exec(ctxA, drainInsert, "a-late"); !errors.Is(err, dbroute.ErrClosed) {
		t.Errorf("call after Close: %v, want ErrClosed", err)
	}
	dsnT, table := e.TargetItems("close")
	if n := pgtest.Count(t, dsnT, "SELECT count(*) FROM "+table); n != 1 {
		t.Errorf("%d rows, want 1 (the transaction's)", n)
	}
}

// TestAttackDrainChurn: many busy sandboxes churn through one or two pool
// slots on the real clock with short turns (and none), while some of their requests
// hold a transaction or open rows and call the router again for their own
// sandbox (which must wait one turn at most, never for ever), and others
// give up early. Every call with time enough succeeds, every one that
// gives up says ErrPoolLimit or its context's error, each sandbox's rows
// land in its own test database only, none in the baseline, and nothing
// is left running.
func TestAttackDrainChurn(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		pools int
		turn  time.Duration
	}{{1, 20 * time.Millisecond}, {2, 20 * time.Millisecond}, {1, 0}} {
		t.Run(fmt.Sprintf("pools=%d,turn=%v", c.pools, c.turn), func(t *testing.T) {
			t.Parallel()
			drainChurn(t, c.pools, c.turn)
		})
	}
}

func drainChurn(t *testing.T, pools int, turn time.Duration) {
	e := pgtest.Server(t)
	const sandboxes = 6
	ids := make([]string, sandboxes)
	dsns := map[string]string{}
	for i := range ids {
		ids[i] = fmt.Sprintf("churn-%d", i)
		dsns[ids[i]] = e.Target(t, ids[i])
	}
	p, err := dbroute.Static(dsns)
	if err != nil {
		t.Fatal(err)
	}
	r := e.Router(t, p, dbroute.WithMaxPools(pools), dbroute.WithPoolTurn(turn), dbroute.WithIdleTimeout(0))
	const patient = 20 * time.Second
	var ok, gaveUp atomic.Int64
	stopAt := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for i, id := range ids {
		sb := pgtest.SandboxCtx(id)
		// One holder per sandbox: a transaction, or open rows, and a call
		// for the same sandbox meanwhile (the pool has 3 connections).
		wg.Go(func() {
			for n := 0; time.Now().Before(stopAt); n++ {
				ctx, cancel := context.WithTimeout(sb, patient)
				err := holdAndCall(ctx, r, id, n%2 == 0)
				cancel()
				if err != nil {
					t.Errorf("%s: holder: %v", id, err)
					return
				}
				ok.Add(1)
			}
		})
		// A patient writer and an impatient one.
		wg.Go(func() {
			for time.Now().Before(stopAt) {
				ctx, cancel := context.WithTimeout(sb, patient)
				_, err := r.Exec(ctx, drainInsert, id)
				cancel()
				if err != nil {
					t.Errorf("%s: patient writer: %v", id, err)
					return
				}
				ok.Add(1)
			}
		})
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(i), 1))
			for time.Now().Before(stopAt) {
				ctx, cancel := context.WithTimeout(sb, time.Duration(rnd.IntN(30))*time.Millisecond)
				_, err := r.Exec(ctx, drainInsert, id)
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, dbroute.ErrPoolLimit) || errors.Is(err, context.DeadlineExceeded):
					gaveUp.Add(1)
				default:
					t.Errorf("%s: impatient writer: %v", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("pools=%d, turn=%v: %d calls succeeded, %d gave up", pools, turn, ok.Load(), gaveUp.Load())
	if len(r.OpenPools()) > pools {
		t.Errorf("open pools %v, more than %d", r.OpenPools(), pools)
	}
	for _, id := range ids {
		dsnT, table := e.TargetItems(id)
		if n := pgtest.Count(t, dsnT, "SELECT count(*) FROM "+table+" WHERE owner <> $1", id); n != 0 {
			t.Errorf("%s's test database holds %d rows of other sandboxes", id, n)
		}
		if n := pgtest.Count(t, dsnT, "SELECT count(*) FROM "+table+" WHERE owner = $1", id); n == 0 {
			t.Errorf("%s never wrote", id)
		}
	}
	dsnB, table := e.BaselineItems()
	if n := pgtest.Count(t, dsnB, "SELECT count(*) FROM "+table); n != 0 {
		t.Errorf("baseline holds %d sandbox rows", n)
	}
}

// holdAndCall holds a connection of ctx's sandbox (a transaction, or open
// rows) while it calls the router again for the same sandbox.
func holdAndCall(ctx context.Context, r *dbroute.Router, id string, tx bool) error {
	if tx {
		t, err := r.Begin(ctx)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer t.Rollback(ctx)
		if _, err := t.Exec(ctx, drainInsert, id); err != nil {
			return fmt.Errorf("in the transaction: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
		if _, err := r.Exec(ctx, drainInsert, id); err != nil {
			return fmt.Errorf("call while holding a transaction: %w", err)
		}
		return t.Commit(ctx)
	}
	rows, err := r.Query(ctx, "SELECT generate_series(1, 3)")
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	rows.Next()
	time.Sleep(5 * time.Millisecond)
	if _, err := r.Exec(ctx, drainInsert, id); err != nil {
		return fmt.Errorf("call while holding open rows: %w", err)
	}
	for rows.Next() {
	}
	return rows.Err()
}

// TestAttackDrainRouteRemoved: a sandbox leaves the route table while its
// pool, held by a transaction, drains and its own call waits. New calls
// for it are refused at once (ErrNoTestDatabase), the waiting one ends
// within a turn, the transaction is not cut, and the other sandbox gets
// the slot once the pool is free and its turn over.
func TestAttackDrainRouteRemoved(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	dsn := e.Target(t, "removed")
	p, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New()
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "a"}, {ID: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	withMeter, waited := waitCounter(t)
	r := e.Router(t, p, dbroute.WithMaxPools(1), dbroute.WithPoolTurn(time.Minute), dbroute.WithIdleTimeout(0),
		dbroute.WithClock(clk.Now), dbroute.WithRoutes(table), withMeter)
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	clk.Advance(2 * time.Minute)
	cb, cancel := context.WithTimeout(ctxB, 30*time.Second)
	defer cancel()
	doneB := execAsync(r, cb, "b")
	waited(1)
	ca, cancel := context.WithTimeout(ctxA, 30*time.Second)
	defer cancel()
	doneA := execAsync(r, ca, "a-queued")
	waited(2)
	table.Remove("a")
	if _, err := r.Exec(ctxA, drainInsert, "a-removed"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("call after a left the route table: %v, want ErrNoTestDatabase", err)
	}
	clk.Advance(2 * time.Minute) // a did not drain within a turn
	if err := within(t, "a's waiting call", doneA, 10*time.Second); err != nil && !errors.Is(err, dbroute.ErrNoTestDatabase) {
		t.Errorf("a's waiting call: %v", err)
	}
	if _, err := tx.Exec(ctxA, drainInsert, "a-tx"); err != nil {
		t.Fatalf("the transaction: %v", err)
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	if err := within(t, "b's call", doneB, 10*time.Second); err != nil {
		t.Fatalf("b: %v", err)
	}
	if got := r.OpenPools(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("open pools = %v, want [b]", got)
	}
	dsnT, tbl := e.TargetItems("removed")
	if n := pgtest.Count(t, dsnT, "SELECT count(*) FROM "+tbl+" WHERE owner = 'a-removed'"); n != 0 {
		t.Errorf("a call refused by the route table wrote %d rows", n)
	}
	if n := pgtest.Count(t, dsnT, "SELECT count(*) FROM "+tbl+" WHERE owner IN ('a-tx', 'b')"); n != 2 {
		t.Errorf("%d rows of the transaction and b, want 2", n)
	}
}

// TestAttackDrainDeadDatabase: a sandbox whose test database cannot be
// reached (its server refuses connections) takes a slot while another
// sandbox's pool, held by a transaction, drains. Its calls fail as
// ErrUnavailable at once, never hang; a pool that never had a connection
// is nothing to hand over, so it must not keep the slot for a turn while a
// healthy sandbox waits.
func TestAttackDrainDeadDatabase(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	dsn := e.Target(t, "dead")
	fp := pgtest.NewFaultProxy(t, "127.0.0.1:5432")
	dead := fp.DSN(pgtest.SchemasDB())
	fp.Close() // nothing listens there any more
	p, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn, "dead": dead})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New()
	r := e.Router(t, p, dbroute.WithMaxPools(2), dbroute.WithPoolTurn(time.Minute), dbroute.WithIdleTimeout(0), dbroute.WithClock(clk.Now))
	ctxA, ctxB, ctxD := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b"), pgtest.SandboxCtx("dead")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	if _, err := r.Exec(ctxB, drainInsert, "b-first"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute) // a (held) and b (free) have had their turns
	// dead takes b's slot; a drains meanwhile only if someone else waits.
	for range 3 {
		cd, cancel := context.WithTimeout(ctxD, 10*time.Second)
		_, err := r.Exec(cd, drainInsert, "dead")
		cancel()
		if !errors.Is(err, dbroute.ErrUnavailable) {
			t.Fatalf("dead: %v, want ErrUnavailable", err)
		}
	}
	// b comes back: the dead pool has no connection to give up.
	cb, cancel := context.WithTimeout(ctxB, 3*time.Second)
	defer cancel()
	if _, err := r.Exec(cb, drainInsert, "b"); err != nil {
		t.Fatalf("b, waiting behind a pool that never connected: %v (open pools %v)", err, r.OpenPools())
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
}

// reclaimer is a Static provider that is a Reclaimer: remove calls what
// the router registered, as a provisioner does before it drops a test
// database.
type reclaimer struct {
	dbroute.Provider
	mu sync.Mutex
	f  func(id string)
}

func (c *reclaimer) OnRemove(f func(id string)) { c.mu.Lock(); c.f = f; c.mu.Unlock() }

func (c *reclaimer) remove(id string) {
	c.mu.Lock()
	f := c.f
	c.mu.Unlock()
	f(id)
}

// TestAttackDrainReclaimed: the provider removes a sandbox while its pool,
// held by a transaction, drains and its own call waits. The pool leaves
// the router but is not closed under the transaction; the waiting sandbox
// takes the freed slot at once; the sandbox's own call waits for a turn,
// no longer, and runs on a fresh pool of its own database.
func TestAttackDrainReclaimed(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	dsn := e.Target(t, "reclaimed")
	static, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn})
	if err != nil {
		t.Fatal(err)
	}
	p := &reclaimer{Provider: static}
	clk := clocktest.New()
	withMeter, waited := waitCounter(t)
	r := e.Router(t, p, dbroute.WithMaxPools(1), dbroute.WithPoolTurn(time.Minute), dbroute.WithIdleTimeout(0), dbroute.WithClock(clk.Now), withMeter)
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	clk.Advance(2 * time.Minute)
	cb, cancel := context.WithTimeout(ctxB, 30*time.Second)
	defer cancel()
	doneB := execAsync(r, cb, "b")
	waited(1)
	ca, cancel := context.WithTimeout(ctxA, 30*time.Second)
	defer cancel()
	doneA := execAsync(r, ca, "a-queued")
	waited(2)
	p.remove("a")
	if err := within(t, "b's call once a's pool was removed", doneB, 10*time.Second); err != nil {
		t.Fatalf("b: %v", err)
	}
	if _, err := tx.Exec(ctxA, drainInsert, "a-tx"); err != nil {
		t.Fatalf("the transaction on the removed pool: %v", err)
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute) // b's turn is over
	if err := within(t, "a's waiting call", doneA, 10*time.Second); err != nil {
		t.Fatalf("a's waiting call: %v", err)
	}
	if got := r.OpenPools(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("open pools = %v, want [a]", got)
	}
	dsnT, tbl := e.TargetItems("reclaimed")
	if n := pgtest.Count(t, dsnT, "SELECT count(*) FROM "+tbl); n != 3 {
		t.Errorf("%d rows, want 3", n)
	}
}

// TestAttackDrainZeroTurn: WithPoolTurn(0) with one slot, a transaction
// holding sandbox a's pool and sandbox b waiting: the holder's call for
// its own sandbox goes through at once (a turn of 0 has no drain to wait
// for), b waits until the transaction ends and then gets the slot without
// the clock moving.
func TestAttackDrainZeroTurn(t *testing.T) {
	t.Parallel()
	_, r, _, waited := oneSlot(t, "zero", 0)
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	cb, cancel := context.WithTimeout(ctxB, 30*time.Second)
	defer cancel()
	doneB := execAsync(r, cb, "b")
	waited(1)
	for i := range 5 {
		ca, cancel := context.WithTimeout(ctxA, 5*time.Second)
		_, err := r.Exec(ca, drainInsert, "a")
		cancel()
		if err != nil {
			t.Fatalf("holder's call %d: %v", i, err)
		}
	}
	select {
	case err := <-doneB:
		t.Fatalf("b ran while a's pool was held: %v", err)
	default:
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "b's call", doneB, 10*time.Second); err != nil {
		t.Fatalf("b: %v", err)
	}
	if got := r.OpenPools(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("open pools = %v, want [b]", got)
	}
}

// failingOpen is a provider whose Open fails for one sandbox.
type failingOpen struct {
	*openCounter
	bad string
}

func (f *failingOpen) Open(ctx context.Context, id, key string) (*pgxpool.Config, error) {
	if id == f.bad {
		f.openCounter.Open(ctx, id, key) // counted
		return nil, fmt.Errorf("%w: provisioning %s: injected failure", dbroute.ErrNoTestDatabase, id)
	}
	return f.openCounter.Open(ctx, id, key)
}

// TestAttackDrainProviderFails: the provider fails to open a sandbox that
// took a free pool's slot while another pool, held by a transaction, is
// over its turn. The failure comes back at once, typed; the slot it took
// is not lost (the evicted sandbox reopens without the provider); the
// held pool is not closed under its transaction.
func TestAttackDrainProviderFails(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	dsn := e.Target(t, "fails")
	static, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn, "c": dsn})
	if err != nil {
		t.Fatal(err)
	}
	p := &failingOpen{openCounter: &openCounter{Provider: static}, bad: "c"}
	clk := clocktest.New()
	r := e.Router(t, p, dbroute.WithMaxPools(2), dbroute.WithPoolTurn(time.Minute), dbroute.WithIdleTimeout(0), dbroute.WithClock(clk.Now))
	ctxA, ctxB, ctxC := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b"), pgtest.SandboxCtx("c")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	if _, err := r.Exec(ctxB, drainInsert, "b-1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	for i := range 3 {
		cc, cancel := context.WithTimeout(ctxC, 5*time.Second)
		_, err := r.Exec(cc, drainInsert, "c")
		cancel()
		if !errors.Is(err, dbroute.ErrNoTestDatabase) {
			t.Fatalf("c, try %d: %v, want ErrNoTestDatabase", i, err)
		}
	}
	cb, cancel := context.WithTimeout(ctxB, 5*time.Second)
	defer cancel()
	if _, err := r.Exec(cb, drainInsert, "b-2"); err != nil {
		t.Fatalf("b after c's failed opens: %v (open pools %v)", err, r.OpenPools())
	}
	if _, err := tx.Exec(ctxA, drainInsert, "a-tx"); err != nil {
		t.Fatalf("the transaction: %v", err)
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
	if n := p.count("b"); n != 1 {
		t.Errorf("provider opened b %d times, want 1", n)
	}
	if got := r.OpenPools(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("open pools = %v, want [a b]", got)
	}
}

// TestAttackDrainCloseUnderChurn: Router.Close while sandboxes churn
// through one slot with short turns, holders of transactions and open rows
// calling the router again: every call ends (with success, ErrClosed or
// ErrPoolLimit), Close returns once the holders let go, and nothing is
// left running.
func TestAttackDrainCloseUnderChurn(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	dsn := e.Target(t, "closechurn")
	dsns := map[string]string{}
	ids := []string{"c0", "c1", "c2", "c3", "c4"}
	for _, id := range ids {
		dsns[id] = dsn
	}
	p, err := dbroute.Static(dsns)
	if err != nil {
		t.Fatal(err)
	}
	r := e.Router(t, p, dbroute.WithMaxPools(1), dbroute.WithPoolTurn(10*time.Millisecond), dbroute.WithIdleTimeout(0))
	var wg sync.WaitGroup
	unexpected := func(err error) bool {
		return err != nil && !errors.Is(err, dbroute.ErrClosed) && !errors.Is(err, dbroute.ErrPoolLimit)
	}
	for i, id := range ids {
		sb := pgtest.SandboxCtx(id)
		wg.Go(func() {
			for n := 0; ; n++ {
				ctx, cancel := context.WithTimeout(sb, 20*time.Second)
				err := holdAndCall(ctx, r, id, n%2 == 0)
				cancel()
				if errors.Is(err, dbroute.ErrClosed) {
					return
				}
				if unexpected(err) {
					t.Errorf("%s: holder: %v", id, err)
					return
				}
			}
		})
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(i), 2))
			for {
				ctx, cancel := context.WithTimeout(sb, time.Duration(1+rnd.IntN(200))*time.Millisecond)
				_, err := r.Exec(ctx, drainInsert, id)
				cancel()
				if errors.Is(err, dbroute.ErrClosed) {
					return
				}
				if unexpected(err) && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: writer: %v", id, err)
					return
				}
			}
		})
	}
	time.Sleep(time.Second)
	closed := make(chan error, 1)
	go func() { r.Close(); closed <- nil }()
	within(t, "Close", closed, 20*time.Second)
	ended := make(chan error, 1)
	go func() { wg.Wait(); ended <- nil }()
	within(t, "the callers after Close", ended, 20*time.Second)
}

// TestAttackDrainDatabaseMoves: a sandbox's test database moves (its route
// table entry changes) while its pool, held by a transaction, drains and
// another sandbox waits. The transaction finishes on the old database (its
// pool is not closed under it), the sandbox's next call lands in the new
// one after the waiting sandbox's turn, and no row lands elsewhere.
func TestAttackDrainDatabaseMoves(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	clk := clocktest.New()
	one, two, other := e.Target(t, "one"), e.Target(t, "two"), e.Target(t, "other")
	exp := clk.Now().Add(time.Hour)
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "a", Database: one, Expires: exp},
		{ID: "b", Database: other, Expires: exp},
	}, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	withMeter, waited := waitCounter(t)
	r := e.Router(t, dbroute.FromTable(table), dbroute.WithMaxPools(1), dbroute.WithPoolTurn(time.Minute), dbroute.WithIdleTimeout(0), dbroute.WithClock(clk.Now), withMeter)
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	clk.Advance(2 * time.Minute)
	cb, cancel := context.WithTimeout(ctxB, 30*time.Second)
	defer cancel()
	doneB := execAsync(r, cb, "b")
	waited(1)
	if err := table.Update([]routes.Sandbox{{ID: "a", Database: two, Expires: exp}, {ID: "b", Database: other, Expires: exp}}); err != nil {
		t.Fatal(err)
	}
	ca, cancel := context.WithTimeout(ctxA, 30*time.Second)
	defer cancel()
	doneA := execAsync(r, ca, "a")
	if err := within(t, "b's call", doneB, 10*time.Second); err != nil {
		t.Fatalf("b: %v", err)
	}
	if _, err := tx.Exec(ctxA, drainInsert, "a-tx"); err != nil {
		t.Fatalf("the transaction on the old database: %v", err)
	}
	if err := tx.Commit(ctxA); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute) // b's turn is over
	if err := within(t, "a's call", doneA, 10*time.Second); err != nil {
		t.Fatalf("a: %v", err)
	}
	for name, want := range map[string]string{"one": "a-tx", "two": "a", "other": "b"} {
		dsn, tbl := e.TargetItems(name)
		if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+tbl+" WHERE owner = $1", want); n != 1 {
			t.Errorf("%s: %d rows of %s, want 1", name, n, want)
		}
		if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+tbl+" WHERE owner <> $1", want); n != 0 {
			t.Errorf("%s: %d rows that belong elsewhere", name, n)
		}
	}
}

// TestAttackDrainHolderWaitsOneTurn: on the real clock, a request holding
// a transaction of a draining pool and calling the router for its sandbox
// waits about one turn (the promise: one turn at most, plus the polling),
// never until its context ends, round after round.
func TestAttackDrainHolderWaitsOneTurn(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	dsn := e.Target(t, "oneturn")
	p, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn})
	if err != nil {
		t.Fatal(err)
	}
	const turn = 200 * time.Millisecond
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	r := e.Router(t, p, dbroute.WithMaxPools(1), dbroute.WithPoolTurn(turn), dbroute.WithIdleTimeout(0), dbroute.WithMeterProvider(mp))
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	for round := range 3 {
		tx, err := r.Begin(ctxA)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		time.Sleep(5 * turn) // a's turn (up to 4 turns, stretched) is over
		cb, cancelB := context.WithTimeout(ctxB, 30*time.Second)
		waits := poolLimitCounts(t, rd)[dbroute.OutcomeWaited]
		doneB := execAsync(r, cb, "b")
		// b waits, a drains: the holder's call below must come after
		// b queued, or it tests nothing (a sleep could not promise that).
		for deadline := time.Now().Add(20 * time.Second); poolLimitCounts(t, rd)[dbroute.OutcomeWaited] == waits; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: b never waited for a's pool (waits %v)", round, poolLimitCounts(t, rd))
			}
		}
		ca, cancelA := context.WithTimeout(ctxA, 30*time.Second)
		start := time.Now()
		_, err = r.Exec(ca, drainInsert, "a")
		waited := time.Since(start)
		cancelA()
		if err != nil {
			t.Fatalf("round %d: holder's call: %v", round, err)
		}
		if waited > 10*turn {
			t.Errorf("round %d: holder's call waited %v, turn %v", round, waited, turn)
		}
		if err := tx.Commit(ctxA); err != nil {
			t.Fatal(err)
		}
		if err := within(t, "b", doneB, 20*time.Second); err != nil {
			t.Fatalf("round %d: b: %v", round, err)
		}
		cancelB()
		t.Logf("round %d: the holder waited %v (turn %v)", round, waited, turn)
	}
}
