package dbroute_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
)

// Attacks on draining pools (#18): a pool whose turn is over drains while
// other sandboxes wait for a slot, and takes calls again if it has not
// drained within a turn.

const drainInsert = "INSERT INTO items (owner) VALUES ($1)"

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

// settle gives calls just started the time to queue for a slot.
func settle() { time.Sleep(100 * time.Millisecond) }

// TestAttackDrainCancelWhileQueued: calls queued behind a draining pool
// (another sandbox's and the holder's own) whose contexts end get
// ErrPoolLimit at once, and leave no slot behind: afterwards the holder's
// pool takes calls again and the other sandbox gets the slot once it is
// free.
func TestAttackDrainCancelWhileQueued(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	dsn := e.Target(t, "cancel")
	p, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New()
	r := e.Router(t, p, dbroute.WithMaxPools(1), dbroute.WithPoolTurn(time.Minute), dbroute.WithIdleTimeout(0), dbroute.WithClock(clk.Now))
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
		settle() // b waits, a drains
		ca, cancelA := context.WithCancel(ctxA)
		doneA := execAsync(r, ca, "a-cancelled")
		settle()
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
	e := pgtest.Server(t)
	dsn := e.Target(t, "close")
	p, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New()
	r := e.Router(t, p, dbroute.WithMaxPools(1), dbroute.WithPoolTurn(time.Minute), dbroute.WithIdleTimeout(0), dbroute.WithClock(clk.Now))
	ctxA, ctxB := pgtest.SandboxCtx("a"), pgtest.SandboxCtx("b")
	tx, err := r.Begin(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctxA)
	clk.Advance(2 * time.Minute)
	doneB := execAsync(r, ctxB, "b")
	settle()
	doneA := execAsync(r, ctxA, "a-queued")
	settle()
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
