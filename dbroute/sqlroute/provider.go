package sqlroute

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Provider tells a [Router] where each sandbox's test database is, and
// creates it when needed. It is [dbroute.Provider] with a database/sql
// connector in place of a pgx pool configuration: Lookup has the same
// contract, and so do the errors (wrapping [dbroute.ErrNoTestDatabase],
// [dbroute.ErrNotOwned], [dbroute.ErrUnavailable]). Implementations must
// be safe for concurrent use.
//
// A Provider that also has OnRemove(func(id string)) (as
// [dbroute.Reclaimer]) gets the router registered: before it removes a
// sandbox's test database, the router closes the sandbox's *sql.DB.
type Provider interface {
	// Lookup reports, without I/O, which test database serves sandbox
	// id: a key that changes whenever the database does. See
	// [dbroute.Provider].
	Lookup(id string) (key string, err error)
	// Open creates sandbox id's test database if the provider provisions
	// them, and returns a connector for it. key is what Lookup returned.
	// The router calls Open only when it has no open *sql.DB for the
	// sandbox, and for a given sandbox only once at a time.
	Open(ctx context.Context, id, key string) (driver.Connector, error)
}

// reclaimer is a Provider whose test databases can be removed under the
// router ([dbroute.Reclaimer]'s OnRemove).
type reclaimer interface {
	OnRemove(f func(id string))
}

// Postgres returns a [Provider] of PostgreSQL test databases reached
// through pgx's database/sql driver (github.com/jackc/pgx/v5/stdlib): p
// is any [dbroute.Provider] — [dbroute.Static], [dbroute.FromTable], or
// the provisioners of dbroute/provision (a database or a schema per
// sandbox) — and each connector is built from the pool configuration p
// returns (its ConnConfig: host, database, runtime parameters such as the
// schema provisioner's search_path). A [dbroute.Reclaimer] stays one.
func Postgres(p dbroute.Provider) Provider {
	if r, ok := p.(dbroute.Reclaimer); ok {
		return pgReclaimer{pgProvider{p}, r}
	}
	return pgProvider{p}
}

type pgProvider struct{ p dbroute.Provider }

func (p pgProvider) Lookup(id string) (string, error) { return p.p.Lookup(id) }

func (p pgProvider) Open(ctx context.Context, id, key string) (driver.Connector, error) {
	cfg, err := p.p.Open(ctx, id, key)
	if err != nil {
		return nil, err
	}
	if cfg == nil || cfg.ConnConfig == nil {
		return nil, fmt.Errorf("%w: sandbox %q: provider returned no configuration", dbroute.ErrNoTestDatabase, id)
	}
	return stdlib.GetConnector(*cfg.ConnConfig), nil
}

type pgReclaimer struct {
	pgProvider
	r dbroute.Reclaimer
}

func (p pgReclaimer) OnRemove(f func(id string)) { p.r.OnRemove(f) }

// MySQL returns a [Provider] of MySQL or MariaDB test databases reached
// through github.com/go-sql-driver/mysql, whose keys are the connection
// strings (DSNs, "user:password@tcp(host:3306)/db?param=value") that p's
// Lookup returns, such as [dbroute.FromTable] (the Database field of the
// route table). Only p's Lookup is used (for a fixed map, [StaticMySQL]:
// [dbroute.Static] checks its connection strings as PostgreSQL's). A DSN that does
// not parse, or names no database, is [dbroute.ErrNoTestDatabase].
// For a database per sandbox created on demand, use the MySQL provisioner
// of dbroute/provision instead.
func MySQL(p dbroute.Provider) Provider { return mysqlKeys{p} }

type mysqlKeys struct {
	p interface{ Lookup(string) (string, error) }
}

// StaticMySQL returns a [Provider] with a fixed MySQL or MariaDB test
// database per sandbox: dsns maps a sandbox ID to a connection string
// naming its database. It copies dsns and checks every entry (the errors
// wrap [dbroute.ErrConfig]); sandboxes not in it get
// [dbroute.ErrNoTestDatabase]. It is [dbroute.Static] for MySQL DSNs.
func StaticMySQL(dsns map[string]string) (Provider, error) {
	m := make(staticKeys, len(dsns))
	for id, dsn := range dsns {
		if err := propagation.ValidateID(id); err != nil {
			return nil, fmt.Errorf("sqlroute: StaticMySQL: %w: %w", dbroute.ErrConfig, err)
		}
		cfg, err := mysql.ParseDSN(dsn)
		if err == nil && cfg.DBName == "" {
			err = errors.New("the connection string names no database")
		}
		if err != nil {
			return nil, fmt.Errorf("sqlroute: StaticMySQL: %w: test database of sandbox %q: %w", dbroute.ErrConfig, id, err)
		}
		m[id] = dsn
	}
	return mysqlKeys{m}, nil
}

type staticKeys map[string]string

func (m staticKeys) Lookup(id string) (string, error) {
	if dsn, ok := m[id]; ok {
		return dsn, nil
	}
	return "", fmt.Errorf("%w: sandbox %q has none configured", dbroute.ErrNoTestDatabase, id)
}

func (p mysqlKeys) Lookup(id string) (string, error) { return p.p.Lookup(id) }

func (p mysqlKeys) Open(_ context.Context, id, key string) (driver.Connector, error) {
	cfg, err := mysql.ParseDSN(key)
	if err != nil {
		// The parser's errors do not repeat the DSN (and its password).
		return nil, fmt.Errorf("%w: sandbox %q: %w", dbroute.ErrNoTestDatabase, id, err)
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("%w: sandbox %q: the connection string names no database", dbroute.ErrNoTestDatabase, id)
	}
	return mysql.NewConnector(cfg)
}
