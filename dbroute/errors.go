package dbroute

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgerr"
	"github.com/sandboxkit/sandboxkit/routes"
)

// sharedError is a sentinel of this package that is also a sentinel
// shared by every adapter: its text is its own, errors.Is finds both.
type sharedError struct {
	msg    string
	shared error
}

func (e *sharedError) Error() string { return e.msg }
func (e *sharedError) Unwrap() error { return e.shared }

// Errors. Every error a [Router] or a provider returns for a sandbox
// request falls in one of these classes, found with [errors.Is] whether
// the failure arose while the test database was provisioned and its pool
// opened (first use) or on a pool already open (later use):
//
//   - [ErrNoTestDatabase]: permanent until someone changes the
//     configuration — the sandbox has no test database configured, is not
//     in the route table, has an invalid ID, its migration fails, its
//     test database is the baseline's, or the server refuses to connect
//     to it (no such database or role, authentication failed; pools
//     connect lazily, so this may first show on a statement). [ErrNotOwned] refines it: an object
//     of the sandbox's name exists that the library did not create.
//   - [ErrUnavailable]: transient — the test database (or the server that
//     creates it) cannot be reached now, the open did not finish in time,
//     the template is in use by another session, or a provisioned test
//     database was dropped elsewhere (the next request creates it again).
//     Retry later. [ErrPoolLimit] refines it: every sandbox pool the
//     router may keep ([WithMaxPools]) is busy and the caller's context
//     ended while it waited for one.
//   - [ErrSandboxOnBaseline]: a baseline pool or connection protected by
//     [Guard] refused a statement with a sandbox context.
//   - [ErrClosed]: the router was closed.
//
// Errors the server reports about the statement itself (syntax, a
// constraint) are pgx's own and wrap none of these. Later-use failures are
// classified on the router's methods, their rows, rows, batch results and
// transactions; a connection from [Router.Acquire] or a pool from
// [Router.Pool] is pgx's own, and its methods' errors are not.
var (
	// ErrNoTestDatabase reports a sandbox request for which no test
	// database can be used. The request is refused: it never falls back to
	// the baseline.
	ErrNoTestDatabase = errors.New("dbroute: no test database for the sandbox")
	// ErrUnavailable reports a sandbox's test database that cannot be
	// reached now: a transient failure, never a reason to use the
	// baseline. It wraps [routes.ErrSandboxUnavailable], the unavailable
	// sandbox upstream every adapter reports, so that one errors.Is
	// serves a caller of HTTP, gRPC and the database alike.
	ErrUnavailable error = &sharedError{"dbroute: test database unavailable", routes.ErrSandboxUnavailable}
	// ErrPoolLimit reports a sandbox request that waited for a pool slot
	// ([WithMaxPools]) until its context ended. Errors wrapping it also
	// wrap [ErrUnavailable].
	ErrPoolLimit = errors.New("dbroute: every sandbox pool is in use")
	// ErrSandboxOnBaseline reports a sandbox context used on a baseline
	// pool protected by [Guard].
	ErrSandboxOnBaseline = errors.New("dbroute: sandbox context on the baseline pool")
	// ErrNotOwned reports a database or schema that has a name the library
	// would use but was not created by it (its marker is missing or
	// belongs to another name). The library never uses or drops it.
	// Errors of a sandbox request that wrap it also wrap
	// [ErrNoTestDatabase].
	ErrNotOwned = errors.New("dbroute: database object not created by dbroute")
	// ErrClosed reports a sandbox request on a closed [Router].
	ErrClosed = errors.New("dbroute: router closed")
	// ErrConfig reports a misconfiguration found by a constructor ([New],
	// [Static], and the provisioners of dbroute/provision): an invalid
	// option, a missing argument. The message names the option.
	ErrConfig = errors.New("dbroute: invalid configuration")
)

// classify makes a provider's or an opening's failure of sandbox id wrap
// exactly one class: ErrUnavailable when the server could not be reached,
// else ErrNoTestDatabase (unless it already wraps a class; an error
// wrapping ErrNotOwned gets ErrNoTestDatabase).
func classify(id string, err error) error {
	switch {
	case err == nil, errors.Is(err, ErrNoTestDatabase), errors.Is(err, ErrUnavailable),
		errors.Is(err, ErrClosed), errors.Is(err, ErrSandboxOnBaseline):
		return err
	case pgerr.Unreachable(err):
		return fmt.Errorf("%w: sandbox %q: %w", ErrUnavailable, id, err)
	}
	return fmt.Errorf("%w: sandbox %q: %w", ErrNoTestDatabase, id, err)
}

// later classifies an error of a statement on sandbox id's open pool: a
// lost or refused connection wraps ErrUnavailable; anything else (the
// server's verdict on the statement) is returned as it is.
//
// Pools connect lazily, so a server that refuses to connect (no such
// database, no such role, authentication failed) is only seen here: that
// wraps ErrNoTestDatabase, as it would have at open.
func later(id string, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoTestDatabase) {
		return err
	}
	if pgerr.Unreachable(err) {
		return fmt.Errorf("%w: sandbox %q: %w", ErrUnavailable, id, err)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: sandbox %q: %w", ErrNoTestDatabase, id, err)
	}
	return err
}
