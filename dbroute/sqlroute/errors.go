package sqlroute

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/sqlerr"
)

// ErrForeignContext reports a statement refused on a sandbox's test
// database because its context does not carry that sandbox: a Conn, Tx
// or Stmt the [Router] handed out for one sandbox, used with a production
// request's context or another sandbox's (context.Background() and TODO,
// which database/sql passes for its methods without a context, are the
// holder's and pass). It is not one of dbroute's classes: the
// statement reached no database, and the code that made it holds a
// handle of the wrong sandbox.
var ErrForeignContext = errors.New("sqlroute: a sandbox's test database used with another context")

// refusedConnection reports whether err is the server refusing to connect
// to the test database: no such database, no such user, access denied.
func refusedConnection(err error) bool {
	var ce *pgconn.ConnectError
	return sqlerr.IsMySQL(err, sqlerr.DBAccessDenied, sqlerr.AccessDenied, sqlerr.BadDB) || errors.As(err, &ce)
}

// classified reports whether err already wraps one of dbroute's classes.
func classified(err error) bool {
	return errors.Is(err, dbroute.ErrNoTestDatabase) || errors.Is(err, dbroute.ErrUnavailable) ||
		errors.Is(err, dbroute.ErrClosed) || errors.Is(err, dbroute.ErrSandboxOnBaseline)
}

// classify makes a provider's or an opening's failure of sandbox id wrap
// exactly one class, as dbroute's: [dbroute.ErrUnavailable] when the
// server could not be reached, else [dbroute.ErrNoTestDatabase].
func classify(id string, err error) error {
	switch {
	case err == nil, classified(err):
		return err
	case sqlerr.Unreachable(err):
		return fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrUnavailable, id, err)
	}
	return fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrNoTestDatabase, id, err)
}

// later classifies an error of a statement on sandbox id's open *sql.DB:
// a lost or refused connection wraps a class; the server's verdict on the
// statement itself is returned as it is.
func later(id string, err error) error {
	switch {
	case err == nil, classified(err), errors.Is(err, context.Canceled):
		return err
	case refusedConnection(err):
		return fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrNoTestDatabase, id, err)
	case sqlerr.Unreachable(err):
		return fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrUnavailable, id, err)
	}
	return err
}
