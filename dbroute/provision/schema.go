package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgerr"
)

const (
	sqlSchemaComment = `SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1`
	sqlSchemas       = `SELECT nspname, coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE starts_with(nspname, $1)`
)

// SchemaPerSandbox is a [dbroute.Reclaimer] that keeps every sandbox in one test
// database, each in a schema of its own, created by the [Migration] on
// first use. Sandbox pools connect with search_path set to the sandbox's
// schema (and nothing else), so unqualified names reach only that schema;
// code that qualifies names with another schema is not isolated.
// Destroy and Reap refuse to drop a schema that objects outside it depend
// on (a view over a sandbox's table, a foreign key to it): DROP SCHEMA ...
// CASCADE would drop them too. The error names them.
//
// Each schema is created, marked and migrated in one transaction, under a
// transaction-level advisory lock: a crash leaves nothing behind, and
// several processes creating the same schema create it once (a process
// that finds it already there, including through "duplicate_schema", uses
// it once its marker comment proves it is a test schema of that sandbox).
//
// It is safe for concurrent use. Close it (or the [dbroute.Router] that owns it)
// to close its admin pool.
type SchemaPerSandbox struct {
	provisioner
	dsn       *pgxpool.Config
	admin     *pgxpool.Pool
	migration Migration
}

// NewSchemaPerSandbox returns a provisioner that creates sandbox schemas
// in the test database dsn points at (never the baseline database: the
// [dbroute.Router] refuses a test database that is the baseline's). It
// does not connect until the first sandbox needs a schema. A bad option or
// connection string is an error wrapping [dbroute.ErrConfig].
func NewSchemaPerSandbox(dsn string, m Migration, opts ...ProvisionerOption) (*SchemaPerSandbox, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	base, admin, err := adminPool(dsn, "test database")
	if err != nil {
		return nil, err
	}
	p := &SchemaPerSandbox{dsn: base, admin: admin, migration: m}
	p.provisioner = provisioner{cfg: cfg, kind: "schema", store: schemas{p}}
	return p, nil
}

// Open implements [dbroute.Provider]: it creates and migrates sandbox id's
// schema if it does not exist, and returns the configuration of a pool
// whose search_path is that schema.
func (p *SchemaPerSandbox) Open(ctx context.Context, id, _ string) (*pgxpool.Config, error) {
	name, err := p.ensure(ctx, id, p.create)
	if err != nil {
		return nil, err
	}
	cfg := p.dsn.Copy()
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = make(map[string]string, 1)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = quoteIdent(name)
	return cfg, nil
}

// Close closes the admin pool.
func (p *SchemaPerSandbox) Close() { p.admin.Close() }

// schemas is the store of [SchemaPerSandbox]: each schema is created,
// marked and migrated in one transaction, under a transaction-level
// advisory lock, so a creation is never left incomplete.
type schemas struct{ p *SchemaPerSandbox }

// schemaSession is a transaction holding the advisory lock of a name.
type schemaSession struct {
	p  *SchemaPerSandbox
	tx pgx.Tx
}

func (s schemas) locked(ctx context.Context, name string, _ bool, f func(session) error) error {
	err := pgx.BeginFunc(ctx, s.p.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", int32(lockClass), lockKey(name)); err != nil {
			return err
		}
		return f(schemaSession{s.p, tx})
	})
	if pgerr.IsCode(err, pgerr.DuplicateSchema, pgerr.UniqueViolation) {
		// Another process won, one that does not take our lock.
		return fmt.Errorf("schema %s: %w: %w", name, errLostRace, err)
	}
	return err
}

func (schemas) transient(err error) bool { return transient(err) }

func (s schemas) list(ctx context.Context, prefix string) ([]object, error) {
	rows, err := s.p.admin.Query(ctx, sqlSchemas, prefix)
	if err != nil {
		return nil, err
	}
	var out []object
	var name, text string
	_, err = pgx.ForEachRow(rows, []any{&name, &text}, func() error {
		out = append(out, object{name: name, exists: true, comment: text})
		return nil
	})
	return out, err
}

func (s schemaSession) state(ctx context.Context, name string) (object, error) {
	text, exists, err := comment(ctx, s.tx, sqlSchemaComment, name)
	return object{name: name, exists: exists, comment: text}, err
}

// create creates, marks and migrates the schema in the session's
// transaction: it commits complete or not at all.
func (s schemaSession) create(ctx context.Context, _, name, marker string) (object, error) {
	schema := quoteIdent(name)
	for _, st := range []struct{ sql, done string }{
		{"CREATE SCHEMA " + schema, "schema-created"},
		{"COMMENT ON SCHEMA " + schema + " IS " + quoteLiteral(marker), "schema-commented"},
		{"SET LOCAL search_path TO " + schema, ""},
	} {
		if _, err := s.tx.Exec(ctx, st.sql); err != nil {
			return object{}, err
		}
		s.p.step(st.done)
	}
	if err := s.p.migration.apply(ctx, s.tx); err != nil {
		return object{}, err
	}
	s.p.step("schema-migrated")
	return object{name: name, exists: true, comment: marker}, nil
}

// A schema is never incomplete: mark and finish are never called.

func (schemaSession) mark(context.Context, string, string) error { return errors.ErrUnsupported }
func (schemaSession) finish(context.Context, string) error       { return errors.ErrUnsupported }

// drop drops the schema and everything in it (CASCADE). It waits for
// transactions that hold locks in the schema. CASCADE would also drop
// what others made outside the schema that depends on it (a view over a
// sandbox's table, a foreign key to it, a trigger calling its function):
// when there is such an object, it refuses, naming it.
func (s schemaSession) drop(ctx context.Context, name string) error {
	rows, _ := s.tx.Query(ctx, sqlSchemaDependents, name)
	outside, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(outside) > 0 {
		return fmt.Errorf("%w: schema %s: objects outside it depend on it and would be dropped with it: %s; drop them first", errDependents, name, strings.Join(outside, ", "))
	}
	_, err = s.tx.Exec(ctx, "DROP SCHEMA "+quoteIdent(name)+" CASCADE")
	return err
}

// errDependents reports objects outside a sandbox's schema that depend on
// it.
var errDependents = errors.New("provision: not dropped")

// sqlSchemaDependents describes the objects outside schema $1 that depend
// on it or on an object in it (which DROP SCHEMA ... CASCADE would drop).
// The parts of a relation (a column default, a trigger, a view's rule, a
// policy) have no schema of their own: theirs is their relation's.
const sqlSchemaDependents = `WITH dep AS (
	SELECT DISTINCT d.classid, d.objid FROM pg_depend d
	WHERE d.deptype IN ('n', 'a')
	AND (d.refclassid = 'pg_namespace'::regclass AND d.refobjid = (SELECT oid FROM pg_namespace WHERE nspname = $1)
		OR (pg_identify_object(d.refclassid, d.refobjid, 0)).schema = $1)
)
SELECT pg_describe_object(classid, objid, 0) FROM dep
WHERE coalesce((pg_identify_object(classid, objid, 0)).schema,
	(SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = CASE classid
		WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = objid)
		WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = objid)
		WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = objid)
		WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = objid)
	END)) IS DISTINCT FROM $1
ORDER BY 1 LIMIT 10`
