// Package pgerr tells PostgreSQL failures apart for dbroute and
// dbroute/provision: a server that could not be reached, and the SQLSTATE
// codes they handle.
package pgerr

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATE codes the router and the provisioners handle.
const (
	DuplicateDatabase     = "42P04"
	DuplicateSchema       = "42P06"
	UniqueViolation       = "23505"
	InvalidCatalog        = "3D000"
	InsufficientPrivilege = "42501"
	ObjectInUse           = "55006"
)

// Unreachable reports whether err says the server could not be reached or
// the connection was lost, rather than that the server refused the
// statement.
func Unreachable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 08: connection exception; 57P01-03: shutdown, crash, cannot
		// connect now; 53300: too many connections.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || pe.Code == "53300"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "conn closed")
}

// IsCode reports whether err is a server error with one of codes.
func IsCode(err error, codes ...string) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	for _, c := range codes {
		if pe.Code == c {
			return true
		}
	}
	return false
}
