package sqlroute

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/sqlerr"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// identityQuery asks a server which server and database it is, in words
// that do not depend on the session (its role, time zone, date style, or
// whether it came over TCP or a unix socket).
type identityQuery struct {
	q string
	// stable: the answer never changes for a database; otherwise it
	// changes when the server restarts, and the baseline is asked again
	// when a test database's answer differs from the one kept.
	stable bool
}

// Identity queries: the server and the database, as the server itself
// reports them, whatever the connection string said.
var (
	// MySQL and MariaDB: the host's name, the port and data directory of
	// the server process, and the database.
	// The database is '' when the session has none: the answer then
	// ends with '|', and names the server alone.
	mysqlIdentity = identityQuery{"SELECT CONCAT_WS('|', @@hostname, @@port, @@datadir, COALESCE(DATABASE(), ''))", true}
	// PostgreSQL: the cluster's system identifier and the database's
	// OID; pg_control_system() may be revoked, then the postmaster's
	// start time (in microseconds since the epoch, whatever the session's
	// time zone), port (the setting, which a unix-socket session has too)
	// and version.
	pgIdentity         = identityQuery{"SELECT s.system_identifier::text || '|' || d.oid::text FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()", true}
	pgIdentityFallback = identityQuery{"SELECT 'started ' || (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text || '|' || current_setting('port') || '|' || current_setting('server_version_num') || '|' || d.oid::text FROM pg_database d WHERE d.datname = current_database()", false}
)

// identityQueries returns the questions to ask a server reached through
// d, and whether d is known (go-sql-driver/mysql, pgx's stdlib): a driver
// of another type (a wrapper, as instrumentation libraries make) is asked
// every question.
func identityQueries(d driver.Driver) ([]identityQuery, bool) {
	switch d.(type) {
	case *mysql.MySQLDriver, mysql.MySQLDriver:
		return []identityQuery{mysqlIdentity}, true
	case *stdlib.Driver:
		return []identityQuery{pgIdentity, pgIdentityFallback}, true
	}
	return []identityQuery{mysqlIdentity, pgIdentity, pgIdentityFallback}, false
}

// connChecker returns the check [ownGuard] runs on each new connection of
// sandbox id's test database, reached through driver d.
func (r *Router) connChecker(id string, d driver.Driver) func(context.Context, driver.Conn) error {
	qs, known := identityQueries(d)
	return func(ctx context.Context, c driver.Conn) error {
		actx, cancel := context.WithTimeout(propagation.ContextWithoutSandbox(ctx), r.cfg.openTimeout)
		defer cancel()
		err := r.notBaseline(actx, id, qs, known, func(q string) (string, error) { return ask(actx, c, q) })
		if errors.Is(err, dbroute.ErrNoTestDatabase) && ctx.Value(openingKey{}) == nil {
			// A later connection refused: the statement that needed it
			// is refused (the open's own refusal is audited by the
			// requests that wait for it).
			s, ok := propagation.FromContext(ctx)
			if !ok || s.ID != id {
				s = propagation.Sandbox{ID: id}
			}
			audit.Emit(ctx, r.cfg.logger, audit.Event{
				Decision: audit.Rejected,
				Sandbox:  s,
				Protocol: audit.SQL,
				Reason:   err.Error(),
			})
		}
		return err
	}
}

// describe returns the database db reaches as its server reports it,
// "host:port/database" (PostgreSQL over a unix socket: "socket/database"),
// for the audit record of its opening: what the server says, whatever the
// connection string said, and no credentials. It returns "" for a driver
// of another type than go-sql-driver/mysql's and pgx's stdlib, or when the
// server does not answer.
func describe(ctx context.Context, db *sql.DB, d driver.Driver) string {
	var q string
	switch d.(type) {
	case *mysql.MySQLDriver, mysql.MySQLDriver:
		q = "SELECT CONCAT(@@hostname, ':', @@port, '/', DATABASE())"
	case *stdlib.Driver:
		q = "SELECT coalesce(host(inet_server_addr()) || ':' || inet_server_port()::text, 'socket') || '/' || current_database()"
	default:
		return ""
	}
	// The first requests wait for the record: a server that answered the
	// ping and then stalls holds them for describeTimeout at most.
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	var target sql.NullString
	if err := db.QueryRowContext(ctx, q).Scan(&target); err != nil {
		return ""
	}
	return target.String
}

// describeTimeout bounds [describe]'s question.
const describeTimeout = 5 * time.Second

// openingKey marks the context of the open's first connection.
type openingKey struct{}

// notBaseline refuses sandbox id's test database when its server and
// database (what ask reports) are the baseline's. Each question is
// compared only with the baseline's answer to the same question: a test
// database that answers one the baseline cannot (pg_control_system()
// revoked for one of the two roles) is compared on the next. Unknown
// drivers that answer nothing are not checked. ctx carries no sandbox.
func (r *Router) notBaseline(ctx context.Context, id string, qs []identityQuery, known bool, ask func(q string) (string, error)) error {
	answered := false
	var testErr, baseErr error
	for _, q := range qs {
		got, err := ask(q.q)
		if err != nil {
			testErr = err
			continue
		}
		answered = true
		base, err := r.baselineIdentity(ctx, q, false)
		if err == nil && got != base && !q.stable {
			// The server may have restarted since the baseline was asked.
			base, err = r.baselineIdentity(ctx, q, true)
		}
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
		if q == mysqlIdentity && strings.HasSuffix(base, "|") && strings.HasPrefix(got, base) {
			// A baseline naming no database reaches those its statements
			// name: on its server, production's cannot be told apart.
			return fmt.Errorf("%w: sandbox %q: its test database is on the baseline's server, and the baseline's connection names no database: it cannot be told apart from production's (name the baseline's database, or put test databases on another server)", dbroute.ErrNoTestDatabase, id)
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

// baselineIdentity asks the baseline q (a stable one on a new connection
// of its connector), or returns its answer kept from before unless fresh.
func (r *Router) baselineIdentity(ctx context.Context, q identityQuery, fresh bool) (string, error) {
	if !fresh {
		r.mu.Lock()
		id, ok := r.baseIDs[q.q]
		r.mu.Unlock()
		if ok {
			return id, nil
		}
	}
	var id string
	if q.stable {
		// Asked once, on a new connection, closed after: a pooled
		// session may have moved (MySQL's USE), and then answers
		// another database than the baseline's connection string names.
		c, err := r.baseC.Connect(ctx)
		if err != nil {
			return "", err
		}
		id, err = ask(ctx, c, q.q)
		c.Close()
		if err != nil {
			return "", err
		}
	} else if err := r.base.QueryRowContext(ctx, q.q).Scan(&id); err != nil {
		// Asked again whenever a test database answers otherwise, so on
		// the pool; no session moves PostgreSQL's answer (its database,
		// port, start time and version).
		return "", err
	}
	r.mu.Lock()
	r.baseIDs[q.q] = id
	r.mu.Unlock()
	return id, nil
}

// ask runs q, which returns one text column, on the driver's connection c
// (a new one, before database/sql hands it to anyone).
func ask(ctx context.Context, c driver.Conn, q string) (string, error) {
	var rows driver.Rows
	err := driver.ErrSkip
	if qc, ok := c.(driver.QueryerContext); ok {
		rows, err = qc.QueryContext(ctx, q, nil)
	}
	if errors.Is(err, driver.ErrSkip) {
		var st driver.Stmt
		if pc, ok := c.(driver.ConnPrepareContext); ok {
			st, err = pc.PrepareContext(ctx, q)
		} else {
			st, err = c.Prepare(q)
		}
		if err != nil {
			return "", err
		}
		defer st.Close()
		if sq, ok := st.(driver.StmtQueryContext); ok {
			rows, err = sq.QueryContext(ctx, nil)
		} else {
			//lint:ignore SA1019 drivers without the context methods
			rows, err = st.Query(nil) //nolint:staticcheck
		}
	}
	if err != nil {
		return "", err
	}
	defer rows.Close()
	if n := len(rows.Columns()); n != 1 {
		return "", fmt.Errorf("sqlroute: identity query: %d columns", n)
	}
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil {
		if err == io.EOF {
			err = errors.New("sqlroute: identity query: no row")
		}
		return "", err
	}
	switch v := dest[0].(type) {
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	case nil:
		return "", errors.New("sqlroute: identity query: NULL")
	default:
		return fmt.Sprint(v), nil
	}
}
