package dbroute

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/jackc/pgx/v5/pgxpool"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Provider tells a [Router] where each sandbox's test database is, and
// creates it when needed. Implementations must be safe for concurrent use.
type Provider interface {
	// Lookup reports, without I/O, which test database serves sandbox id:
	// a key (such as its connection string) that changes whenever the
	// database does, so the router knows when to reopen its pool. It is
	// called on every sandbox request and should not allocate. The error
	// wraps [ErrNoTestDatabase] when the sandbox has no test database.
	Lookup(id string) (key string, err error)
	// Open creates sandbox id's test database if the provider provisions
	// them, and returns the configuration of a pool for it (built with
	// [pgxpool.ParseConfig]). key is what Lookup returned. The router
	// calls Open only when it has no open pool for the sandbox, and for a
	// given sandbox only once at a time. The error wraps
	// [ErrNoTestDatabase] when the sandbox has no test database.
	Open(ctx context.Context, id, key string) (*pgxpool.Config, error)
}

// Reclaimer is a [Provider] that also removes the test databases it
// created (the provisioners of dbroute/provision, whose Destroy and Reap
// remove them). [New] registers the router with OnRemove: before a
// sandbox's test database is removed, the router closes the sandbox's
// pool and forgets what the provider returned for it, so the next request
// provisions a fresh one. A statement that finds the test database of a
// Reclaimer dropped by another process fails with [ErrUnavailable] (the
// next request creates it again) rather than [ErrNoTestDatabase].
type Reclaimer interface {
	Provider
	// OnRemove registers f, to be called with a sandbox's ID before the
	// provider removes its test database. f must not block on the
	// provider.
	OnRemove(f func(id string))
}

// Static returns a [Provider] with a fixed test database per sandbox: dsns
// maps a sandbox ID to a connection string. It copies dsns and checks every
// entry; sandboxes not in it get [ErrNoTestDatabase].
func Static(dsns map[string]string) (Provider, error) {
	for id, dsn := range dsns {
		if err := propagation.ValidateID(id); err != nil {
			return nil, fmt.Errorf("%w: Static: %w", ErrConfig, err)
		}
		if _, err := pgxpool.ParseConfig(dsn); err != nil {
			return nil, fmt.Errorf("%w: Static: test database of sandbox %q: %w", ErrConfig, id, err)
		}
	}
	return staticProvider(maps.Clone(dsns)), nil
}

type staticProvider map[string]string

func (p staticProvider) Lookup(id string) (string, error) {
	if dsn, ok := p[id]; ok {
		return dsn, nil
	}
	return "", fmt.Errorf("%w: sandbox %q has none configured", ErrNoTestDatabase, id)
}

func (p staticProvider) Open(_ context.Context, id, key string) (*pgxpool.Config, error) {
	return parseTestDSN(id, key)
}

// FromTable returns a [Provider] that reads each sandbox's test database
// from the Database field of its entry in t. A sandbox that is not in t, has
// expired, or has no Database gets [ErrNoTestDatabase] (before t has ever
// loaded, [ErrUnavailable]: t cannot yet say whether the sandbox exists); when the entry's
// Database changes, the router reopens the sandbox's pool. [New] refuses
// FromTable(nil) with [ErrConfig].
func FromTable(t *routes.Table) Provider { return tableProvider{t} }

type tableProvider struct{ t *routes.Table }

func (p tableProvider) Lookup(id string) (string, error) {
	if p.t == nil {
		return "", fmt.Errorf("%w: no route table", ErrNoTestDatabase)
	}
	sb, ok := p.t.Sandbox(id)
	switch {
	case !ok:
		return "", notInTable(p.t, id)
	case sb.Database == "":
		return "", fmt.Errorf("%w: sandbox %q has no database in the route table", ErrNoTestDatabase, id)
	}
	return sb.Database, nil
}

func (p tableProvider) Open(_ context.Context, id, key string) (*pgxpool.Config, error) {
	return parseTestDSN(id, key)
}

func parseTestDSN(id, dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The connection string may hold a password: pgconn's parse
		// errors redact it.
		return nil, fmt.Errorf("%w: sandbox %q: %w", ErrNoTestDatabase, id, err)
	}
	return cfg, nil
}

// notInTable is the error for sandbox id, which table t does not hold: a
// table that has never loaded cannot say whether the sandbox exists, and
// the request is refused as unavailable for now (audited as not synced,
// as the other routers say), rather than as a sandbox without a test
// database.
func notInTable(t *routes.Table, id string) error {
	if t.SyncedAt().IsZero() {
		return fmt.Errorf("%w: sandbox %q: %w", ErrUnavailable, id, errNotSynced)
	}
	return fmt.Errorf("%w: sandbox %q is not in the route table", ErrNoTestDatabase, id)
}

// errNotSynced is wrapped by the refusal of a sandbox request before the
// route table has loaded.
var errNotSynced = errors.New(pub.ReasonNotSynced)
