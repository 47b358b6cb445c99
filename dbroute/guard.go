package dbroute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Guard makes a baseline pool refuse sandbox contexts on every statement:
// it changes cfg, to be passed to [pgxpool.NewWithConfig], so that
//
//   - acquiring a connection with a sandbox context fails (a PrepareConn
//     hook), which covers every query method of the pool (Exec, Query,
//     QueryRow, Begin, BeginTx, SendBatch, CopyFrom, Acquire, AcquireFunc,
//     Ping); the connection goes back to the pool unharmed;
//   - every statement sent over one of its connections with a sandbox
//     context fails before anything is sent (a tracer), however the
//     connection or transaction was obtained: a connection acquired, or a
//     transaction begun, with a baseline context and then used with a
//     sandbox context is refused too — Exec, Query, QueryRow, SendBatch,
//     CopyFrom and Prepare of [pgx.Conn], [pgxpool.Conn] and [pgx.Tx],
//     and Commit (a refused Commit leaves nothing committed; pgx closes
//     the connection when Rollback fails, which aborts the transaction).
//
// The errors wrap [ErrSandboxOnBaseline].
//
// How the refusal works: pgx hands each statement's context to the
// tracer's Trace*Start method and runs the statement with the context it
// returns. For a sandbox context the guard returns a context that is
// already done and whose Err is the refusal; pgconn checks the context
// before it writes to the server, so nothing is sent, the connection stays
// usable, and the error pgx returns wraps the refusal.
//
// What it cannot catch: statements sent through the [pgconn.PgConn] under
// a connection (c.Conn().PgConn().Exec and friends, which no tracer sees);
// a statement whose context has lost the sandbox (a goroutine started with
// context.Background()); rows of a query, or results of a batch, started
// with a baseline context and read later under a sandbox context (no new
// statement is sent); reads and writes of a [pgx.LargeObject] opened with
// a baseline context (its Read, Write, Seek and Truncate take no context:
// they use the one it was opened with); and the methods of [pgx.Conn] that
// no tracer sees but that read no table and write nothing: Ping,
// Deallocate, DeallocateAll, LoadType, WaitForNotification. Prepare of a
// statement already prepared on the connection returns it without a round
// trip (nothing is written). A sandbox context whose deadline has passed
// fails an acquisition from the pool with the context's error, before the
// guard sees it (nothing is sent either way).
//
// With [WithLogger] among opts, each refusal is one audit record
// (rejected, protocol "sql"); Guard reads no other option.
//
// Hooks and a tracer already in cfg keep running for baseline contexts:
// the guard wraps them (PrepareConn, or the deprecated BeforeAcquire;
// AfterConnect; ConnConfig.Tracer with whichever of pgx's and pgxpool's
// tracer interfaces it implements). Call Guard once per configuration,
// after setting them. A tracer set after Guard would remove the statement
// guard: every new connection of such a pool is refused (AfterConnect),
// so the pool fails loudly instead of quietly losing the guard. A
// [multitracer.Tracer] is accepted when the guard's tracer is its last
// query, batch, copy-from and prepare tracer
// (multitracer.New(yours, cfg.ConnConfig.Tracer) after Guard): pgx runs
// each statement with the context the last tracer returns. A nil cfg is
// left alone.
func Guard(cfg *pgxpool.Config, opts ...GuardOption) {
	if cfg == nil {
		return
	}
	c := newGuardConfig(opts)
	logger := c.logger
	next := cfg.PrepareConn
	//lint:ignore SA1019 a hook the user set with the deprecated field must keep running for baseline contexts: the guard wraps it
	if before := cfg.BeforeAcquire; next == nil && before != nil {
		next = func(ctx context.Context, c *pgx.Conn) (bool, error) { return before(ctx, c), nil }
	}
	//lint:ignore SA1019 PrepareConn takes precedence anyway; clearing the deprecated hook makes plain that the guard's wrapper runs it
	cfg.BeforeAcquire = nil
	cfg.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		if s, ok := propagation.FromContext(ctx); ok {
			// true: the connection is fine, only this caller is refused.
			return true, refuseOnBaseline(ctx, logger, s)
		}
		if next != nil {
			return next(ctx, c)
		}
		return true, nil
	}
	GuardConn(cfg.ConnConfig, opts...)
	after := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if !guarded(c.Config().Tracer) {
			return errTracerReplaced
		}
		if after != nil {
			return after(ctx, c)
		}
		return nil
	}
}

// errTracerReplaced refuses the connections of a pool whose tracer was
// replaced after [Guard]: without the guard's tracer, a statement sent
// with a sandbox context over a connection acquired without one would
// reach the baseline.
var errTracerReplaced = errors.New("dbroute: the baseline pool's ConnConfig.Tracer was replaced after Guard, which removed its statement guard: set the tracer first, then call Guard (or put the guard's tracer last in a multitracer)")

// guarded reports whether t is the guard's tracer, or a multitracer that
// runs it last for queries, batches, copies and prepares: last, because
// pgx runs a statement with the context the last tracer returns, and a
// tracer after the guard could drop the refusal (context.WithoutCancel).
func guarded(t pgx.QueryTracer) bool {
	switch t := t.(type) {
	case *guardTracer:
		return true
	case *multitracer.Tracer:
		return last(t.QueryTracers) && last(t.BatchTracers) && last(t.CopyFromTracers) && last(t.PrepareTracers)
	}
	return false
}

func last[T any](tracers []T) bool {
	if len(tracers) == 0 {
		return false
	}
	_, ok := any(tracers[len(tracers)-1]).(*guardTracer)
	return ok
}

// GuardConn installs the statement guard of [Guard] on a single
// connection's configuration (for [pgx.ConnectConfig]): every statement
// sent with a sandbox context fails with an error wrapping
// [ErrSandboxOnBaseline]. A tracer already in cfg keeps running for
// baseline contexts; set it before GuardConn (a tracer set after replaces
// the guard, and a single connection has no hook to notice). With
// [WithLogger] among opts, each refusal is one audit record. A nil cfg is
// left alone.
//
// Through database/sql (pgx's stdlib driver) GuardConn still keeps every
// sandbox statement from being sent, but the refusal does not reach the
// caller as ErrSandboxOnBaseline: the stdlib driver reports an error that
// pgx marks safe to retry (nothing was sent) as driver.ErrBadConn, so
// database/sql retries the statement on up to three connections, closes
// each of them, and returns driver.ErrBadConn. Nothing is written, but
// every refused sandbox statement costs the baseline those connections.
// A database/sql baseline needs a guard that checks the context before
// the driver is called.
func GuardConn(cfg *pgx.ConnConfig, opts ...GuardOption) {
	if cfg == nil {
		return
	}
	if _, ok := cfg.Tracer.(*guardTracer); ok {
		return
	}
	g := newGuardTracer(cfg.Tracer)
	g.logger = newGuardConfig(opts).logger
	cfg.Tracer = g
}

// refuseOnBaseline returns the refusal of s, and audits it.
func refuseOnBaseline(ctx context.Context, logger *slog.Logger, s propagation.Sandbox) error {
	err := fmt.Errorf("%w: sandbox %q (the baseline database only serves production traffic)", ErrSandboxOnBaseline, s.ID)
	if logger != nil {
		audit.Emit(ctx, logger, audit.Event{
			Decision: audit.Rejected,
			Sandbox:  s,
			Protocol: audit.SQL,
			Reason:   err.Error(),
		})
	}
	return err
}

// refused is the context a guard tracer hands back for a sandbox
// statement: done, with the refusal as its error. It keeps the values of
// the statement's context.
type refused struct {
	context.Context
	err error
}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (refused) Done() <-chan struct{}                   { return closedDone }
func (r refused) Err() error                            { return r.err }
func (refused) Deadline() (deadline time.Time, ok bool) { return time.Time{}, false }

// guardTracer refuses sandbox contexts and passes the rest to next.
type guardTracer struct {
	logger   *slog.Logger
	next     pgx.QueryTracer
	batch    pgx.BatchTracer
	copyFrom pgx.CopyFromTracer
	prepare  pgx.PrepareTracer
	connect  pgx.ConnectTracer
	acquire  pgxpool.AcquireTracer
	release  pgxpool.ReleaseTracer
}

func newGuardTracer(next pgx.QueryTracer) *guardTracer {
	g := &guardTracer{next: next}
	g.batch, _ = next.(pgx.BatchTracer)
	g.copyFrom, _ = next.(pgx.CopyFromTracer)
	g.prepare, _ = next.(pgx.PrepareTracer)
	g.connect, _ = next.(pgx.ConnectTracer)
	g.acquire, _ = next.(pgxpool.AcquireTracer)
	g.release, _ = next.(pgxpool.ReleaseTracer)
	return g
}

// check returns the refused context for a sandbox context, and nil for a
// baseline one.
func (g *guardTracer) check(ctx context.Context) context.Context {
	if r, ok := ctx.(refused); ok {
		return r // refused once already (CopyFrom, then its Prepare)
	}
	if s, ok := propagation.FromContext(ctx); ok {
		if errors.Is(ctx.Err(), ErrSandboxOnBaseline) {
			return ctx // refused already, and wrapped by another tracer since
		}
		return refused{ctx, refuseOnBaseline(ctx, g.logger, s)}
	}
	return nil
}

func isRefused(ctx context.Context) bool {
	_, ok := ctx.(refused)
	return ok
}

func (g *guardTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if r := g.check(ctx); r != nil {
		return r
	}
	if g.next != nil {
		return g.next.TraceQueryStart(ctx, c, d)
	}
	return ctx
}

func (g *guardTracer) TraceQueryEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryEndData) {
	if g.next != nil && !isRefused(ctx) {
		g.next.TraceQueryEnd(ctx, c, d)
	}
}

func (g *guardTracer) TraceBatchStart(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	if r := g.check(ctx); r != nil {
		return r
	}
	if g.batch != nil {
		return g.batch.TraceBatchStart(ctx, c, d)
	}
	return ctx
}

func (g *guardTracer) TraceBatchQuery(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchQueryData) {
	if g.batch != nil && !isRefused(ctx) {
		g.batch.TraceBatchQuery(ctx, c, d)
	}
}

func (g *guardTracer) TraceBatchEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceBatchEndData) {
	if g.batch != nil && !isRefused(ctx) {
		g.batch.TraceBatchEnd(ctx, c, d)
	}
}

func (g *guardTracer) TraceCopyFromStart(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	if r := g.check(ctx); r != nil {
		return r
	}
	if g.copyFrom != nil {
		return g.copyFrom.TraceCopyFromStart(ctx, c, d)
	}
	return ctx
}

func (g *guardTracer) TraceCopyFromEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceCopyFromEndData) {
	if g.copyFrom != nil && !isRefused(ctx) {
		g.copyFrom.TraceCopyFromEnd(ctx, c, d)
	}
}

func (g *guardTracer) TracePrepareStart(ctx context.Context, c *pgx.Conn, d pgx.TracePrepareStartData) context.Context {
	if r := g.check(ctx); r != nil {
		return r
	}
	if g.prepare != nil {
		return g.prepare.TracePrepareStart(ctx, c, d)
	}
	return ctx
}

func (g *guardTracer) TracePrepareEnd(ctx context.Context, c *pgx.Conn, d pgx.TracePrepareEndData) {
	if g.prepare != nil && !isRefused(ctx) {
		g.prepare.TracePrepareEnd(ctx, c, d)
	}
}

// Connecting is not a statement on the baseline's data: it is passed on.

func (g *guardTracer) TraceConnectStart(ctx context.Context, d pgx.TraceConnectStartData) context.Context {
	if g.connect != nil {
		return g.connect.TraceConnectStart(ctx, d)
	}
	return ctx
}

func (g *guardTracer) TraceConnectEnd(ctx context.Context, d pgx.TraceConnectEndData) {
	if g.connect != nil {
		g.connect.TraceConnectEnd(ctx, d)
	}
}

func (g *guardTracer) TraceAcquireStart(ctx context.Context, p *pgxpool.Pool, d pgxpool.TraceAcquireStartData) context.Context {
	if g.acquire != nil {
		return g.acquire.TraceAcquireStart(ctx, p, d)
	}
	return ctx
}

func (g *guardTracer) TraceAcquireEnd(ctx context.Context, p *pgxpool.Pool, d pgxpool.TraceAcquireEndData) {
	if g.acquire != nil {
		g.acquire.TraceAcquireEnd(ctx, p, d)
	}
}

func (g *guardTracer) TraceRelease(p *pgxpool.Pool, d pgxpool.TraceReleaseData) {
	if g.release != nil {
		g.release.TraceRelease(p, d)
	}
}
