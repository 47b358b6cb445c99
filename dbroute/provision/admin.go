package provision

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgerr"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// rowQuerier is a pooled connection or a transaction.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// advisoryLock takes the session-level advisory lock of the object called
// name on c, shared or exclusive. Release it with unlockAll.
func advisoryLock(ctx context.Context, c *pgxpool.Conn, name string, shared bool) error {
	fn := "SELECT pg_advisory_lock($1, $2)"
	if shared {
		fn = "SELECT pg_advisory_lock_shared($1, $2)"
	}
	_, err := c.Exec(ctx, fn, int32(lockClass), lockKey(name))
	return err
}

// unlockAll releases every advisory lock c holds. A connection that may
// still hold one is closed rather than returned to the pool (closing the
// session releases its locks).
func unlockAll(c *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		c.Conn().Close(ctx)
	}
}

// comment returns the comment of the object found by sql (which selects
// one nullable text column for a name), and whether the object exists.
func comment(ctx context.Context, q rowQuerier, sql, name string) (string, bool, error) {
	var text *string
	switch err := q.QueryRow(ctx, sql, name).Scan(&text); err {
	case nil:
	case pgx.ErrNoRows:
		return "", false, nil
	default:
		return "", false, err
	}
	if text == nil {
		return "", true, nil
	}
	return *text, true, nil
}

// adminPool parses dsn (what, in errors) and opens a small pool on it,
// which connects lazily.
func adminPool(dsn, what string) (*pgxpool.Config, *pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors redact a password.
		return nil, nil, fmt.Errorf("provision: %s connection string: %w: %w", what, dbroute.ErrConfig, err)
	}
	acfg := cfg.Copy()
	acfg.MaxConns = 4
	acfg.MinConns = 0
	admin, err := pgxpool.NewWithConfig(context.Background(), acfg)
	if err != nil {
		return nil, nil, fmt.Errorf("provision: %s pool: %w", what, err)
	}
	return cfg, admin, nil
}

// idOf is the sandbox ID whose name is name in its short form, or "".
func idOf(prefix, name string) string {
	id := strings.ReplaceAll(strings.TrimPrefix(name, prefix), "_", "-")
	if propagation.ValidateID(id) != nil || objectName(prefix, id) != name {
		return ""
	}
	return id
}

// transient is the store method shared by the PostgreSQL stores: the
// server could not be reached, or (object_in_use) the template is being
// accessed by another session (a template built before it was closed to
// connections), which passes.
func transient(err error) bool {
	return pgerr.Unreachable(err) || pgerr.IsCode(err, pgerr.ObjectInUse)
}
