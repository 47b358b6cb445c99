package dbroute

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// Guard makes a baseline pool refuse sandbox contexts: it installs a
// PrepareConn hook on cfg, to be passed to [pgxpool.NewWithConfig], that
// fails every acquisition whose context carries a sandbox with an error
// wrapping [ErrSandboxOnBaseline]. Every query method of the pool (Exec,
// Query, QueryRow, Begin, BeginTx, SendBatch, CopyFrom, Acquire,
// AcquireFunc, Ping) acquires a connection with the caller's context, so
// code that bypasses the [Router] cannot touch production data from a
// sandbox request. The refused connection goes back to the pool unharmed.
//
// A hook already in cfg (PrepareConn, or the deprecated BeforeAcquire) keeps
// running for baseline contexts. Guard is idempotent in effect but not in
// cost: call it once per configuration. A nil cfg is left alone.
//
// The guard checks acquisitions. A connection checked out with a baseline
// context and then used with a sandbox context, or a transaction begun
// with one, is not checked again.
func Guard(cfg *pgxpool.Config) {
	if cfg == nil {
		return
	}
	next := cfg.PrepareConn
	if next == nil && cfg.BeforeAcquire != nil {
		before := cfg.BeforeAcquire
		next = func(ctx context.Context, c *pgx.Conn) (bool, error) { return before(ctx, c), nil }
	}
	cfg.BeforeAcquire = nil // PrepareConn takes precedence anyway; drop it to make that plain
	cfg.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		if s, ok := propagation.FromContext(ctx); ok {
			// true: the connection is fine, only this caller is refused.
			return true, fmt.Errorf("%w: sandbox %q (the baseline pool only serves production traffic)", ErrSandboxOnBaseline, s.ID)
		}
		if next != nil {
			return next(ctx, c)
		}
		return true, nil
	}
}
