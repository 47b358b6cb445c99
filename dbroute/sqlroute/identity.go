package sqlroute

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/sqlerr"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// identityQuery asks a server which server and database it is, in words
// that do not depend on the session (its role, time zone, date style, or
// whether it came over TCP or a unix socket).
type identityQuery struct {
	q string
	// stable: the answer never changes for a database (the baseline's is
	// kept); otherwise it changes when the server restarts and the
	// baseline is asked again for each open.
	stable bool
}

// Identity queries: the server and the database, as the server itself
// reports them, whatever the connection string said.
var (
	// MySQL and MariaDB: the host's name, the port and data directory of
	// the server process, and the database.
	mysqlIdentity = identityQuery{"SELECT CONCAT_WS('|', @@hostname, @@port, @@datadir, DATABASE())", true}
	// PostgreSQL: the cluster's system identifier and the database's
	// OID; pg_control_system() may be revoked, then the postmaster's
	// start time (in microseconds since the epoch, whatever the session's
	// time zone), port (the setting, which a unix-socket session has too)
	// and version.
	pgIdentity         = identityQuery{"SELECT s.system_identifier::text || '|' || d.oid::text FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()", true}
	pgIdentityFallback = identityQuery{"SELECT 'started ' || (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text || '|' || current_setting('port') || '|' || current_setting('server_version_num') || '|' || d.oid::text FROM pg_database d WHERE d.datname = current_database()", false}
)

// identityQueries returns the questions to ask db's server, and whether
// its driver is known (go-sql-driver/mysql, pgx's stdlib): a driver of
// another type (a wrapper, as instrumentation libraries make) is asked
// every question.
func identityQueries(db *sql.DB) ([]identityQuery, bool) {
	switch db.Driver().(type) {
	case *mysql.MySQLDriver, mysql.MySQLDriver:
		return []identityQuery{mysqlIdentity}, true
	case *stdlib.Driver:
		return []identityQuery{pgIdentity, pgIdentityFallback}, true
	}
	return []identityQuery{mysqlIdentity, pgIdentity, pgIdentityFallback}, false
}

// notBaseline refuses sandbox id's test database db when its server and
// database are the baseline's. Each question is compared only with the
// baseline's answer to the same question: a test database that answers
// one the baseline cannot (pg_control_system() revoked for one of the
// two roles) is compared on the next. Unknown drivers that answer nothing
// are not checked.
func (r *Router) notBaseline(ctx context.Context, id string, db *sql.DB) error {
	qs, known := identityQueries(db)
	// db is guarded by [ownGuard]: it is asked with the sandbox's context
	// (and the baseline with ctx, which carries none).
	sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id})
	answered := false
	var testErr, baseErr error
	for _, q := range qs {
		var got string
		if err := db.QueryRowContext(sctx, q.q).Scan(&got); err != nil {
			testErr = err
			continue
		}
		answered = true
		base, err := r.baselineIdentity(ctx, q)
		if err != nil {
			if sqlerr.Unreachable(err) || ctx.Err() != nil {
				return fmt.Errorf("%w: sandbox %q: the baseline's identity: %w", dbroute.ErrUnavailable, id, err)
			}
			baseErr = err // it cannot answer this one: the next
			continue
		}
		if got == base {
			return fmt.Errorf("%w: sandbox %q: its test database is the baseline database (same server and database, as the server reports them)", dbroute.ErrNoTestDatabase, id)
		}
		return nil
	}
	switch {
	case answered:
		return fmt.Errorf("%w: sandbox %q: the baseline's server does not say which server and database it is in words the test database's does (a driver neither go-sql-driver/mysql nor pgx, nor wrapping them, or a privilege revoked: %v): its test database cannot be told apart from it", dbroute.ErrNoTestDatabase, id, baseErr)
	case known:
		return classify(id, testErr)
	}
	return nil
}

// baselineIdentity asks the baseline q (a stable answer once).
func (r *Router) baselineIdentity(ctx context.Context, q identityQuery) (string, error) {
	if q.stable {
		r.mu.Lock()
		id, ok := r.baseIDs[q.q]
		r.mu.Unlock()
		if ok {
			return id, nil
		}
	}
	// ctx is the open's own: it carries no sandbox, the guard lets it by.
	var id string
	if err := r.base.QueryRowContext(ctx, q.q).Scan(&id); err != nil {
		return "", err
	}
	if q.stable {
		r.mu.Lock()
		r.baseIDs[q.q] = id
		r.mu.Unlock()
	}
	return id, nil
}
