// Package sqlerr tells the errors of database/sql drivers apart, for
// dbroute/sqlroute and the MySQL provisioner of dbroute/provision.
package sqlerr

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/go-sql-driver/mysql"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgerr"
)

// MySQL error numbers.
const (
	DBAccessDenied = 1044 // ER_DBACCESS_DENIED_ERROR
	AccessDenied   = 1045 // ER_ACCESS_DENIED_ERROR
	DBCreateExists = 1007 // ER_DB_CREATE_EXISTS
	BadDB          = 1049 // ER_BAD_DB_ERROR
)

// Unreachable reports whether err says the server could not be reached or
// the connection was lost (MySQL or PostgreSQL, through database/sql).
func Unreachable(err error) bool {
	var ne net.Error
	return pgerr.Unreachable(err) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne)
}

// IsMySQL reports whether err is a MySQL server error with one of numbers.
func IsMySQL(err error, numbers ...uint16) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	for _, n := range numbers {
		if me.Number == n {
			return true
		}
	}
	return false
}
