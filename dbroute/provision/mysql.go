package provision

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/sqlerr"
)

// MySQLMigration builds the schema of a MySQL or MariaDB test database.
type MySQLMigration struct {
	// Version names the schema Apply builds (kept for symmetry with
	// [Migration]; each database is migrated when it is created).
	Version string
	// Apply creates the tables and seed data, on a connection whose
	// default database is the new test database (create objects with
	// unqualified names). MySQL commits DDL as it goes, so an Apply
	// interrupted half-way leaves a database still marked as being
	// created: the next request drops it and starts again. A nil Apply
	// leaves the database empty.
	Apply func(ctx context.Context, conn *sql.Conn) error
}

// MySQLDatabasePerSandbox provisions a MySQL or MariaDB database per
// sandbox, migrated by the user's [MySQLMigration], for a
// dbroute/sqlroute Router: it is a sqlroute.Provider (its Open returns a
// database/sql connector) and has OnRemove, so the router closes a
// sandbox's *sql.DB before Destroy or Reap drops its database. It shares
// the skeleton of [DatabasePerSandbox]: names, markers, Provisioned,
// Destroy, Reap, recovery of interrupted creations.
//
// # Markers
//
// The marker is the database's comment (CREATE DATABASE ... COMMENT,
// stored by the server with the database; MariaDB 10.5 and later, whose
// information_schema.SCHEMATA has SCHEMA_COMMENT; MySQL has no database
// comments, and the constructor's first use fails there with
// [dbroute.ErrNoTestDatabase]). The database is created with the comment
// "sandboxkit/dbroute creating" in the same statement, so no database of
// ours ever exists unmarked: a crash or a cut connection at any point
// leaves either nothing, a database marked as being created (dropped and
// created again by the next request; dropped by Destroy and Reap), or a
// finished database whose comment is the sandbox marker (set by ALTER
// DATABASE ... COMMENT after the migration). A database of the name
// without one of these comments is not ours: [dbroute.ErrNotOwned], never
// used or dropped. DROP DATABASE drops table after table, so Destroy and
// Reap put the creation mark back first (a drop cut short leaves a
// database the next request drops and creates again, never a finished one
// with tables missing), and refuse, naming them, when tables of other
// databases reference the database's by foreign key (the drop would fail
// half-way). Every step runs under a named lock of the server
// (GET_LOCK), so a creation in progress elsewhere is never mistaken for
// an abandoned one; the lock is released when the connection ends.
type MySQLDatabasePerSandbox struct {
	provisioner
	admin *sql.DB
	dsn   *mysql.Config
	m     MySQLMigration
}

// markerCreating is the comment of a database being created.
const markerCreating = markerPrefix + "creating"

// NewMySQLDatabasePerSandbox returns a provisioner that creates the test
// databases on the server of adminDSN (a go-sql-driver/mysql connection
// string whose user may create and drop databases; its database, if any,
// is not used). Sandboxes' connectors use the same connection string with
// the sandbox's database. The errors wrap [dbroute.ErrConfig].
func NewMySQLDatabasePerSandbox(adminDSN string, m MySQLMigration, opts ...ProvisionerOption) (*MySQLDatabasePerSandbox, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	dsn, err := mysql.ParseDSN(adminDSN)
	if err != nil {
		return nil, fmt.Errorf("provision: admin connection string: %w: %w", dbroute.ErrConfig, err)
	}
	acfg := dsn.Clone()
	acfg.DBName = ""
	c, err := mysql.NewConnector(acfg)
	if err != nil {
		return nil, fmt.Errorf("provision: admin connection string: %w: %w", dbroute.ErrConfig, err)
	}
	admin := sql.OpenDB(c)
	admin.SetMaxOpenConns(4)
	admin.SetConnMaxIdleTime(time.Minute)
	p := &MySQLDatabasePerSandbox{admin: admin, dsn: dsn, m: m}
	p.provisioner = provisioner{cfg: cfg, kind: "database", store: mysqlDatabases{p}}
	return p, nil
}

// Open creates sandbox id's database if it does not exist (or finishes an
// interrupted creation), and returns a connector for it.
func (p *MySQLDatabasePerSandbox) Open(ctx context.Context, id, _ string) (driver.Connector, error) {
	name, err := p.ensure(ctx, id, p.provisioner.create)
	if err != nil {
		return nil, err
	}
	cfg := p.dsn.Clone()
	cfg.DBName = name
	return mysql.NewConnector(cfg)
}

// Close closes the admin pool.
func (p *MySQLDatabasePerSandbox) Close() { p.admin.Close() }

// mysqlDatabases is the store of [MySQLDatabasePerSandbox].
type mysqlDatabases struct{ p *MySQLDatabasePerSandbox }

type mysqlSession struct {
	p     *MySQLDatabasePerSandbox
	c     *sql.Conn
	fresh bool // this session created the database: nothing to undo
}

// mysqlLockName is the server lock of the object called name (MySQL lock
// names are at most 64 characters). Two names sharing it only wait for
// each other.
func mysqlLockName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "sandboxkit/dbroute/" + hex.EncodeToString(sum[:12])
}

func (d mysqlDatabases) locked(ctx context.Context, name string, _ bool, f func(session) error) error {
	c, err := d.p.admin.Conn(ctx)
	if err != nil {
		return err
	}
	lock := mysqlLockName(name)
	var got sql.NullInt64
	// Wait until the lock is free, up to the context's deadline (or an
	// hour); a context cancelled earlier makes the driver close the
	// connection, which ends the wait. MariaDB has no infinite timeout.
	wait := time.Hour
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	if err := c.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", lock, max(wait.Seconds(), 0)).Scan(&got); err != nil || got.Int64 != 1 {
		discard(c)
		if err == nil {
			err = fmt.Errorf("GET_LOCK(%q) returned %v", lock, got)
		}
		return err
	}
	// The session may have changed its default database: close it rather
	// than hand it back (which also releases the lock).
	defer discard(c)
	return f(&mysqlSession{p: d.p, c: c})
}

// discard closes the connection under c instead of returning it to the
// pool.
func discard(c *sql.Conn) {
	c.Raw(func(any) error { return driver.ErrBadConn })
	c.Close()
}

func (mysqlDatabases) transient(err error) bool { return sqlerr.Unreachable(err) }

// Database names are case-sensitive on most servers (lower_case_table_names
// 0), but information_schema compares them without case: list and state
// compare them as bytes, or a database whose name differs from ours only
// in case would be taken for ours.

func (d mysqlDatabases) list(ctx context.Context, prefix string) ([]object, error) {
	rows, err := d.p.admin.QueryContext(ctx,
		"SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE LEFT(SCHEMA_NAME, CHAR_LENGTH(?)) = ? ORDER BY 1", prefix, prefix)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []object
	for rows.Next() {
		var name, comment string
		if err := rows.Scan(&name, &comment); err != nil {
			return nil, err
		}
		if strings.HasPrefix(name, prefix) { // the server compared without case
			out = append(out, mysqlObject(name, comment))
		}
	}
	return out, rows.Err()
}

func mysqlObject(name, comment string) object {
	if comment == markerCreating {
		return object{name: name, exists: true, incomplete: true}
	}
	return object{name: name, exists: true, comment: comment}
}

func (s *mysqlSession) state(ctx context.Context, name string) (object, error) {
	var comment string
	err := s.c.QueryRowContext(ctx, "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE BINARY SCHEMA_NAME = ?", name).Scan(&comment)
	if errors.Is(err, sql.ErrNoRows) {
		return object{name: name}, nil
	}
	if err != nil {
		return object{}, err
	}
	return mysqlObject(name, comment), nil
}

func (s *mysqlSession) create(ctx context.Context, _, name, _ string) (object, error) {
	if _, err := s.c.ExecContext(ctx, "CREATE DATABASE "+mysqlIdent(name)+" COMMENT "+mysqlLiteral(markerCreating)); err != nil {
		if sqlerr.IsMySQL(err, sqlerr.DBCreateExists) {
			return object{}, fmt.Errorf("creating database %s: %w", name, errLostRace)
		}
		return object{}, err
	}
	s.p.step("created")
	s.fresh = true
	return object{name: name, exists: true, incomplete: true}, nil
}

// mark migrates the database (dropped and created again first when an
// earlier creation was interrupted: a half-run migration cannot be
// resumed) and sets its marker.
func (s *mysqlSession) mark(ctx context.Context, name, marker string) error {
	if !s.fresh {
		if err := s.drop(ctx, name); err != nil {
			return err
		}
		if _, err := s.create(ctx, "", name, ""); err != nil {
			return err
		}
	}
	if _, err := s.c.ExecContext(ctx, "USE "+mysqlIdent(name)); err != nil {
		return err
	}
	if s.p.m.Apply != nil {
		if err := s.p.m.Apply(ctx, s.c); err != nil {
			return fmt.Errorf("provision: migration %q: %w", s.p.m.Version, err)
		}
	}
	s.p.step("migrated")
	_, err := s.c.ExecContext(ctx, "ALTER DATABASE "+mysqlIdent(name)+" COMMENT "+mysqlLiteral(marker))
	return err
}

// finish has nothing left to do: the marker opened the database.
func (*mysqlSession) finish(context.Context, string) error { return nil }

// drop drops the database. DROP DATABASE drops its tables one by one, and
// a table that a table of another database references by foreign key
// makes it fail half-way, leaving the others dropped: drop refuses when it
// sees such a reference, naming it, and otherwise first puts the creation
// mark back, so that what a drop cut short leaves (a reference the admin
// user cannot see, a crash) is never taken for a finished database: the
// next request drops it and starts again.
func (s *mysqlSession) drop(ctx context.Context, name string) error {
	rows, err := s.c.QueryContext(ctx, sqlMySQLDependents, name, name)
	if err != nil {
		return err
	}
	defer rows.Close()
	var outside []string
	for rows.Next() {
		var ref string
		if err := rows.Scan(&ref); err != nil {
			return err
		}
		outside = append(outside, ref)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(outside) > 0 {
		return fmt.Errorf("%w: database %s: foreign keys of other databases reference it, and would make DROP DATABASE fail half-way: %s; drop them first", errDependents, name, strings.Join(outside, ", "))
	}
	if _, err := s.c.ExecContext(ctx, "ALTER DATABASE "+mysqlIdent(name)+" COMMENT "+mysqlLiteral(markerCreating)); err != nil {
		return err
	}
	s.p.step("drop-marked")
	_, err = s.c.ExecContext(ctx, "DROP DATABASE IF EXISTS "+mysqlIdent(name))
	return err
}

// sqlMySQLDependents lists the foreign keys of other databases' tables
// that reference a table of database ? (twice).
const sqlMySQLDependents = `SELECT CONCAT(CONSTRAINT_SCHEMA, '.', TABLE_NAME, '.', CONSTRAINT_NAME) FROM information_schema.REFERENTIAL_CONSTRAINTS
WHERE BINARY UNIQUE_CONSTRAINT_SCHEMA = ? AND BINARY CONSTRAINT_SCHEMA <> ? ORDER BY 1 LIMIT 10`

func mysqlIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

// mysqlLiteral quotes s as a MySQL string literal, for statements that
// take no parameters (CREATE DATABASE ... COMMENT).
func mysqlLiteral(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}
