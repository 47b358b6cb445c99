package dbroute

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"

	"github.com/sandboxkit/sandboxkit/propagation"
)

const (
	sqlSchemaComment = `SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1`
	sqlSchemas       = `SELECT nspname, coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE starts_with(nspname, $1)`
)

// SchemaPerSandbox is a [Reclaimer] that keeps every sandbox in one test
// database, each in a schema of its own, created by the [Migration] on
// first use. Sandbox pools connect with search_path set to the sandbox's
// schema (and nothing else), so unqualified names reach only that schema;
// code that qualifies names with another schema is not isolated.
//
// Each schema is created, marked and migrated in one transaction, under a
// transaction-level advisory lock: a crash leaves nothing behind, and
// several processes creating the same schema create it once (a process
// that finds it already there, including through "duplicate_schema", uses
// it once its marker comment proves it is a test schema of that sandbox).
//
// It is safe for concurrent use. Close it (or the [Router] that owns it)
// to close its admin pool.
type SchemaPerSandbox struct {
	cfg       config
	dsn       *pgxpool.Config
	admin     *pgxpool.Pool
	migration Migration
	flights   singleflight.Group
}

// NewSchemaPerSandbox returns a provider that creates sandbox schemas in
// the test database dsn points at (never the baseline database: the
// [Router] refuses a test database that is the baseline's). It reads
// [WithPrefix] and [WithClock]. It does not connect until the first
// sandbox needs a schema.
func NewSchemaPerSandbox(dsn string, m Migration, opts ...Option) (*SchemaPerSandbox, error) {
	cfg := newConfig(opts)
	if err := cfg.validateProvider(); err != nil {
		return nil, err
	}
	base, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("dbroute: test database connection string: %w", err)
	}
	acfg := base.Copy()
	acfg.MaxConns = 4
	acfg.MinConns = 0
	admin, err := pgxpool.NewWithConfig(context.Background(), acfg)
	if err != nil {
		return nil, fmt.Errorf("dbroute: admin pool: %w", err)
	}
	return &SchemaPerSandbox{cfg: cfg, dsn: base, admin: admin, migration: m}, nil
}

// Name returns the name of sandbox id's schema, by the same rule as
// [DatabasePerSandbox.Name].
func (p *SchemaPerSandbox) Name(id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", err
	}
	return objectName(p.cfg.prefix, id), nil
}

// Lookup implements [Provider]: every valid sandbox ID has a schema
// (created by Open), so the key is always "".
func (p *SchemaPerSandbox) Lookup(id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoTestDatabase, err)
	}
	return "", nil
}

// Open implements [Provider]: it creates and migrates sandbox id's schema
// if it does not exist, and returns the configuration of a pool whose
// search_path is that schema.
func (p *SchemaPerSandbox) Open(ctx context.Context, id, _ string) (*pgxpool.Config, error) {
	name, err := p.Name(id)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoTestDatabase, err)
	}
	_, err, _ = p.flights.Do(name, func() (any, error) { return nil, p.create(ctx, id, name) })
	if err != nil {
		return nil, classify(id, err)
	}
	cfg := p.dsn.Copy()
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = make(map[string]string, 1)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = quoteIdent(name)
	return cfg, nil
}

func (p *SchemaPerSandbox) create(ctx context.Context, id, name string) error {
	err := pgx.BeginFunc(ctx, p.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", int32(lockClass), lockKey(name)); err != nil {
			return err
		}
		text, exists, err := comment(ctx, tx, sqlSchemaComment, name)
		if err != nil {
			return err
		}
		if exists {
			return p.checkOwner(id, name, text)
		}
		schema := quoteIdent(name)
		for _, st := range []struct{ sql, done string }{
			{"CREATE SCHEMA " + schema, "schema-created"},
			{"COMMENT ON SCHEMA " + schema + " IS " + quoteLiteral(sandboxMarker(id, p.cfg.now())), "schema-commented"},
			{"SET LOCAL search_path TO " + schema, ""},
		} {
			if _, err := tx.Exec(ctx, st.sql); err != nil {
				return err
			}
			p.step(st.done)
		}
		if err := p.migration.apply(ctx, tx); err != nil {
			return err
		}
		p.step("schema-migrated")
		return nil
	})
	if isCode(err, codeDuplicateSchema, codeUniqueViolation) {
		// Another process won: use its schema if it is ours.
		text, _, cerr := comment(ctx, p.admin, sqlSchemaComment, name)
		if cerr != nil {
			return cerr
		}
		return p.checkOwner(id, name, text)
	}
	return err
}

// step reports to the tests that a provisioning step is done.
func (p *SchemaPerSandbox) step(name string) {
	if p.cfg.step != nil && name != "" {
		p.cfg.step(name)
	}
}

func (p *SchemaPerSandbox) checkOwner(id, name, text string) error {
	if got, _, ok := owner(p.cfg.prefix, name, text); ok && got == id {
		return nil
	}
	return fmt.Errorf("%w: schema %s exists but is not the test schema of sandbox %q (comment %q); drop it by hand or use another prefix", ErrNotOwned, name, id, text)
}

// Provisioned implements [Reclaimer].
func (p *SchemaPerSandbox) Provisioned(ctx context.Context) ([]Provisioned, error) {
	return listOwned(ctx, p.admin, sqlSchemas, p.cfg.prefix)
}

// Destroy implements [Reclaimer]: it drops sandbox id's schema and
// everything in it (CASCADE). It waits for transactions that hold locks in
// the schema.
func (p *SchemaPerSandbox) Destroy(ctx context.Context, id string) error {
	name, err := p.Name(id)
	if err != nil {
		return fmt.Errorf("dbroute: Destroy: %w", err)
	}
	err = pgx.BeginFunc(ctx, p.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", int32(lockClass), lockKey(name)); err != nil {
			return err
		}
		text, exists, err := comment(ctx, tx, sqlSchemaComment, name)
		if err != nil || !exists {
			return err
		}
		if err := p.checkOwner(id, name, text); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "DROP SCHEMA "+quoteIdent(name)+" CASCADE")
		return err
	})
	if err != nil {
		return fmt.Errorf("dbroute: Destroy %q: %w", id, err)
	}
	return nil
}

// Close closes the admin pool.
func (p *SchemaPerSandbox) Close() { p.admin.Close() }
