package dbroute

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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

// Reclaimer is a [Provider] that creates test databases (or schemas) and
// can remove them: [Router.Destroy] and [Router.Reap] need one.
type Reclaimer interface {
	Provider
	// Provisioned lists the test databases this provider created (name
	// prefix and marker both match), sorted by sandbox ID, including those
	// whose creation was interrupted (Incomplete).
	Provisioned(ctx context.Context) ([]Provisioned, error)
	// Destroy removes sandbox id's test database. It returns nil when
	// there is none, and an error wrapping [ErrNotOwned] when an object of
	// that name exists that the provider did not create.
	Destroy(ctx context.Context, id string) error
}

// Provisioned is a test database or schema a provider created.
type Provisioned struct {
	// ID is the sandbox it belongs to.
	ID string
	// Name is the database or schema name.
	Name string
	// Created is when it was created, from its marker comment (to the
	// second, by the creating process's clock); zero when Incomplete
	// and unmarked.
	Created time.Time
	// Incomplete reports a database whose creation was interrupted (see
	// [DatabasePerSandbox]): ID is empty when it cannot be told from the
	// name. The next request for the sandbox finishes it; Destroy and
	// Reap drop it.
	Incomplete bool
}

// Migration builds the schema of a test database.
type Migration struct {
	// Version names the schema Apply builds. [DatabasePerSandbox] rebuilds
	// its template when the version recorded in the template differs, so
	// change it whenever Apply changes.
	Version string
	// Apply creates the tables and seed data. It runs inside a transaction
	// (tx) that also creates the template or schema, so a failure leaves
	// nothing behind; it must not commit that transaction. For
	// [SchemaPerSandbox] the search_path is the sandbox's schema: create
	// objects with unqualified names. A nil Apply leaves the database
	// empty.
	Apply func(ctx context.Context, tx pgx.Tx) error
}

func (m Migration) apply(ctx context.Context, tx pgx.Tx) error {
	if m.Apply == nil {
		return nil
	}
	if err := m.Apply(ctx, tx); err != nil {
		return fmt.Errorf("dbroute: migration %q: %w", m.Version, err)
	}
	return nil
}

// Static returns a [Provider] with a fixed test database per sandbox: dsns
// maps a sandbox ID to a connection string. It copies dsns and checks every
// entry; sandboxes not in it get [ErrNoTestDatabase].
func Static(dsns map[string]string) (Provider, error) {
	for id, dsn := range dsns {
		if err := propagation.ValidateID(id); err != nil {
			return nil, fmt.Errorf("dbroute: static test database: %w", err)
		}
		if _, err := pgxpool.ParseConfig(dsn); err != nil {
			return nil, fmt.Errorf("dbroute: static test database of sandbox %q: %w", id, err)
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
// expired, or has no Database gets [ErrNoTestDatabase]; when the entry's
// Database changes, the router reopens the sandbox's pool.
func FromTable(t *routes.Table) Provider { return tableProvider{t} }

type tableProvider struct{ t *routes.Table }

func (p tableProvider) Lookup(id string) (string, error) {
	if p.t == nil {
		return "", fmt.Errorf("%w: no route table", ErrNoTestDatabase)
	}
	sb, ok := p.t.Sandbox(id)
	switch {
	case !ok:
		return "", fmt.Errorf("%w: sandbox %q is not in the route table", ErrNoTestDatabase, id)
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
