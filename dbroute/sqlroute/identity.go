package sqlroute

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Identity queries: the server and the database, as the server itself
// reports them, whatever the connection string said.
const (
	// MySQL and MariaDB: the host's name, the port and data directory of
	// the server process, and the database.
	mysqlIdentity = "SELECT CONCAT_WS('|', @@hostname, @@port, @@datadir, DATABASE())"
	// PostgreSQL: the cluster's system identifier and the database's
	// OID; pg_control_system() may be revoked, then the postmaster's
	// start time, port and version.
	pgIdentity         = "SELECT s.system_identifier::text || '|' || d.oid::text FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()"
	pgIdentityFallback = "SELECT pg_postmaster_start_time()::text || '|' || COALESCE(inet_server_port(), 0)::text || '|' || version() || '|' || d.oid::text FROM pg_database d WHERE d.datname = current_database()"
)

// identity returns what db's server says it and its database are, and
// whether it could be asked. The queries of db's driver
// (go-sql-driver/mysql, pgx's stdlib) are asked first and their error
// returned; a driver of another type (a wrapper, as instrumentation
// libraries make) is asked every query, and is "unknown" only when none
// answers.
func identity(ctx context.Context, db *sql.DB) (string, bool, error) {
	var qs []string
	known := true
	switch db.Driver().(type) {
	case *mysql.MySQLDriver, mysql.MySQLDriver:
		qs = []string{mysqlIdentity}
	case *stdlib.Driver:
		qs = []string{pgIdentity, pgIdentityFallback}
	default:
		qs, known = []string{mysqlIdentity, pgIdentity, pgIdentityFallback}, false
	}
	var id string
	var err error
	for _, q := range qs {
		if err = db.QueryRowContext(ctx, q).Scan(&id); err == nil {
			return id, true, nil
		}
	}
	if !known {
		return "", false, nil
	}
	return "", true, err
}

// notBaseline refuses sandbox id's test database db when its server and
// database are the baseline's. Unknown drivers are not checked.
func (r *Router) notBaseline(ctx context.Context, id string, db *sql.DB) error {
	// db is guarded by [ownGuard]: it is asked with the sandbox's context
	// (and the baseline, below, with ctx, which carries none).
	got, ok, err := identity(propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id}), db)
	if !ok {
		return nil
	}
	if err != nil {
		return classify(id, err)
	}
	base, err := r.baselineIdentity(ctx)
	if err != nil {
		return fmt.Errorf("%w: sandbox %q: the baseline's identity: %w", dbroute.ErrUnavailable, id, err)
	}
	if base == "" {
		return fmt.Errorf("%w: sandbox %q: the baseline's server does not say which server and database it is (a driver neither go-sql-driver/mysql nor pgx, nor wrapping them): its test database cannot be told apart from it", dbroute.ErrNoTestDatabase, id)
	}
	if got == base {
		return fmt.Errorf("%w: sandbox %q: its test database is the baseline database (same server and database, as the server reports them)", dbroute.ErrNoTestDatabase, id)
	}
	return nil
}

// baselineIdentity asks the baseline once (until it answers).
func (r *Router) baselineIdentity(ctx context.Context) (string, error) {
	r.mu.Lock()
	id := r.baseID
	r.mu.Unlock()
	if id != "" {
		return id, nil
	}
	// ctx is the open's own: it carries no sandbox, the guard lets it by.
	id, _, err := identity(ctx, r.base)
	if err != nil || id == "" {
		return "", err
	}
	r.mu.Lock()
	r.baseID = id
	r.mu.Unlock()
	return id, nil
}
