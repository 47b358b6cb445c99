package provision

import (
	"context"
	"errors"
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
	if _, err := c.Exec(ctx, fn, int32(lockClass), lockKey(name)); err != nil {
		return err
	}
	// Advisory locks belong to a database: a process whose admin
	// connection names another one takes the same lock without waiting.
	// Of two such holders at once, the later one sees the other here and
	// gives up rather than work on the name beside it.
	var elsewhere string
	switch err := c.QueryRow(ctx, sqlLockElsewhere, int32(lockClass), lockKey(name), shared).Scan(&elsewhere); err {
	case nil:
		return fmt.Errorf("provision: another process holds the lock of %s in database %q, not in this connection's %q: %w (every process must name the same database in its admin connection string)", name, elsewhere, c.Conn().Config().Database, errLockElsewhere)
	case pgx.ErrNoRows:
		return nil
	default:
		return err
	}
}

// errLockElsewhere reports that the provisioners' lock of a name is held
// in another database than the one the admin connection names.
var errLockElsewhere = errors.New("lock held in another database")

// sqlLockElsewhere finds a session of another database holding the
// advisory lock ($1, $2) in a mode that conflicts with ours (any mode, or
// exclusive when ours, $3, is shared).
const sqlLockElsewhere = `SELECT coalesce(d.datname, l.database::text) FROM pg_locks l LEFT JOIN pg_database d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int4::oid AND l.objid = $2::int4::oid AND l.objsubid = 2
AND l.database <> (SELECT oid FROM pg_database WHERE datname = current_database())
AND (NOT $3::bool OR l.mode = 'ExclusiveLock') LIMIT 1`

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
