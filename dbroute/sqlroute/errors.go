package sqlroute

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgerr"
)

// MySQL error numbers that say the server refuses the connection itself.
const (
	erDBAccessDenied = 1044 // ER_DBACCESS_DENIED_ERROR
	erAccessDenied   = 1045 // ER_ACCESS_DENIED_ERROR
	erBadDB          = 1049 // ER_BAD_DB_ERROR
)

// unreachable reports whether err says the server could not be reached or
// the connection was lost.
func unreachable(err error) bool {
	var ne net.Error
	return pgerr.Unreachable(err) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne)
}

// refusedConnection reports whether err is the server refusing to connect
// to the test database: no such database, no such user, access denied.
func refusedConnection(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case erDBAccessDenied, erAccessDenied, erBadDB:
			return true
		}
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
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
	case unreachable(err):
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
	case unreachable(err):
		return fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrUnavailable, id, err)
	}
	return err
}
