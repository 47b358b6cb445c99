package provision

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgerr"
)

// DatabasePerSandbox is a [dbroute.Reclaimer] that gives each sandbox its own
// database, cloned from a template database on first use.
//
// The template (named prefix + "_template") is built once from the
// [Migration] and carries its version in its comment; when a process finds
// a template of another version it rebuilds it. Sandbox databases already
// cloned keep the schema they were cloned with.
//
// Creation is safe under concurrency: in one process, requests for the same
// new sandbox share one creation; across processes, advisory locks on the
// server serialise the work on each name, and a database another process
// created first ("duplicate_database") is used, once its marker comment
// proves it is a test database of that sandbox.
//
// The advisory locks are held by the admin session doing the work. A
// session whose client vanished without closing its socket (the host
// crashed, the network split) keeps its lock until the server notices —
// after tcp_keepalives_idle, by default the operating system's two hours;
// until then requests for that sandbox wait and fail with
// [dbroute.ErrUnavailable] when their open times out ([dbroute.WithOpenTimeout]), and a
// template rebuild waits likewise. Put tcp_keepalives_idle,
// tcp_keepalives_interval and tcp_keepalives_count in the admin
// connection string (or the server's configuration) to shorten that.
// A process that is killed closes its socket: its locks go at once.
//
// It is safe for concurrent use. Close it (or the [dbroute.Router] that owns it)
// to close its admin pool.
type DatabasePerSandbox struct {
	provisioner
	dsn       *pgxpool.Config // the admin connection string, parsed: base of every sandbox pool
	admin     *pgxpool.Pool
	migration Migration
	template  string

	mu    sync.Mutex
	ready bool // the template has been checked or built by this process
}

// NewDatabasePerSandbox returns a provisioner that creates sandbox
// databases on the server adminDSN points at. adminDSN names a role
// allowed to create databases and a maintenance database to connect to
// (such as "postgres"); sandbox pools use the same settings with the
// sandbox's database. Every process provisioning with the same prefix
// must name the same maintenance database: the advisory locks that
// serialise them belong to it (work on a name whose lock is held in
// another database is refused with an error saying so). It does not
// connect until the first sandbox needs a database. A bad option or
// connection string is an error wrapping [dbroute.ErrConfig].
func NewDatabasePerSandbox(adminDSN string, m Migration, opts ...ProvisionerOption) (*DatabasePerSandbox, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	dsn, admin, err := adminPool(adminDSN, "admin")
	if err != nil {
		return nil, err
	}
	p := &DatabasePerSandbox{
		dsn:       dsn,
		admin:     admin,
		migration: m,
		template:  templateName(cfg.prefix),
	}
	p.provisioner = provisioner{cfg: cfg, kind: "database", store: databases{p}}
	return p, nil
}

// Template returns the name of the template database.
func (p *DatabasePerSandbox) Template() string { return p.template }

// Open implements [dbroute.Provider]: it builds the template if needed,
// creates sandbox id's database if it does not exist (or finishes its
// interrupted creation), and returns the configuration of a pool for it.
func (p *DatabasePerSandbox) Open(ctx context.Context, id, _ string) (*pgxpool.Config, error) {
	name, err := p.ensure(ctx, id, p.clone)
	if err != nil {
		return nil, err
	}
	cfg := p.dsn.Copy()
	cfg.ConnConfig.Database = name
	return cfg, nil
}

// clone builds the template if needed, then the sandbox's database (the
// skeleton's steps), building the template again if it disappeared.
func (p *DatabasePerSandbox) clone(ctx context.Context, id, name string) error {
	for attempt := 0; ; attempt++ {
		if err := p.ensureTemplate(ctx); err != nil {
			return err
		}
		err := p.create(ctx, id, name)
		if attempt == 0 && pgerr.IsCode(err, pgerr.InvalidCatalog) {
			// The template disappeared (dropped by hand, or being
			// rebuilt by a process that failed): build it again.
			p.mu.Lock()
			p.ready = false
			p.mu.Unlock()
			continue
		}
		return err
	}
}

// Close closes the admin pool.
func (p *DatabasePerSandbox) Close() { p.admin.Close() }

// A database's state, as pg_database tells it.
type dbState struct {
	exists  bool
	comment string
	allow   bool  // datallowconn
	limit   int32 // datconnlimit
}

// creating reports whether the database carries the creation mark: set by
// the CREATE DATABASE statement itself, so it commits with the creation.
func (s dbState) creating() bool { return s.limit == creationConnLimit }

// invalid reports a database whose DROP DATABASE was interrupted: since
// PostgreSQL 15.4 (and 11.21, 12.16, 13.12, 14.9) the drop first marks the
// database invalid (datconnlimit -2), and nothing but DROP works on it.
func (s dbState) invalid() bool { return s.limit == invalidConnLimit }

// invalidConnLimit is PostgreSQL's DATCONNLIMIT_INVALID_DB.
const invalidConnLimit = -2

func (s dbState) object(name string) object {
	return object{name: name, exists: s.exists, comment: s.comment, incomplete: s.creating() && !s.allow, dropping: s.invalid()}
}

// creationConnLimit is the CONNECTION LIMIT every database the provisioner
// creates starts with (sandbox databases also with ALLOW_CONNECTIONS
// false): the mark that a database of the provisioner's name is the
// provisioner's, from the moment it exists until its marker comment is set
// and the mark removed. It is what makes an interrupted creation
// recognisable, since CREATE DATABASE cannot run in a transaction with
// the COMMENT that follows it.
const creationConnLimit = 5813

const (
	sqlDatabaseState = `SELECT coalesce(shobj_description(oid, 'pg_database'), ''), datallowconn, datconnlimit FROM pg_database WHERE datname = $1`
	sqlDatabaseList  = `SELECT datname, coalesce(shobj_description(oid, 'pg_database'), ''), datallowconn, datconnlimit FROM pg_database WHERE starts_with(datname, $1)`
)

func databaseState(ctx context.Context, q rowQuerier, name string) (dbState, error) {
	var st dbState
	err := q.QueryRow(ctx, sqlDatabaseState, name).Scan(&st.comment, &st.allow, &st.limit)
	if err == pgx.ErrNoRows {
		return dbState{}, nil
	}
	st.exists = err == nil
	return st, err
}

// databases is the store of [DatabasePerSandbox]: a database per sandbox,
// whose creation takes three transactions —
//
//  1. CREATE DATABASE ... TEMPLATE ... ALLOW_CONNECTIONS false
//     CONNECTION LIMIT creationConnLimit (unusable, and marked as ours);
//  2. COMMENT ON DATABASE: the sandbox marker;
//  3. ALTER DATABASE ... ALLOW_CONNECTIONS true CONNECTION LIMIT -1.
type databases struct{ p *DatabasePerSandbox }

// dbSession is an admin connection holding advisory locks.
type dbSession struct {
	p *DatabasePerSandbox
	c *pgxpool.Conn
}

func (d databases) locked(ctx context.Context, name string, creating bool, f func(session) error) error {
	c, err := d.p.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	defer unlockAll(c)
	// Same order everywhere: template, then sandbox.
	if creating {
		if err := advisoryLock(ctx, c, d.p.template, true); err != nil {
			return err
		}
	}
	if err := advisoryLock(ctx, c, name, false); err != nil {
		return err
	}
	return f(dbSession{d.p, c})
}

func (databases) transient(err error) bool { return transient(err) }

func (d databases) list(ctx context.Context, prefix string) ([]object, error) {
	rows, err := d.p.admin.Query(ctx, sqlDatabaseList, prefix)
	if err != nil {
		return nil, err
	}
	var out []object
	var name string
	var st dbState
	_, err = pgx.ForEachRow(rows, []any{&name, &st.comment, &st.allow, &st.limit}, func() error {
		if name != d.p.template {
			st.exists = true
			out = append(out, st.object(name))
		}
		return nil
	})
	return out, err
}

func (s dbSession) state(ctx context.Context, name string) (object, error) {
	st, err := databaseState(ctx, s.c, name)
	return st.object(name), err
}

func (s dbSession) create(ctx context.Context, _, name, _ string) (object, error) {
	_, err := s.c.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)+" TEMPLATE "+quoteIdent(s.p.template)+
		" ALLOW_CONNECTIONS false CONNECTION LIMIT "+strconv.Itoa(creationConnLimit))
	if pgerr.IsCode(err, pgerr.DuplicateDatabase) {
		// Another process won (one that does not take our locks, or
		// an older version): use its database if it is ours.
		return s.state(ctx, name)
	}
	if err != nil {
		return object{}, fmt.Errorf("creating database %s from %s: %w", name, s.p.template, err)
	}
	s.p.step("created")
	return object{name: name, exists: true, incomplete: true}, nil
}

func (s dbSession) mark(ctx context.Context, name, marker string) error {
	_, err := s.c.Exec(ctx, "COMMENT ON DATABASE "+quoteIdent(name)+" IS "+quoteLiteral(marker))
	return err
}

func (s dbSession) finish(ctx context.Context, name string) error {
	_, err := s.c.Exec(ctx, "ALTER DATABASE "+quoteIdent(name)+" WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1")
	return err
}

func (s dbSession) drop(ctx context.Context, name string) error {
	_, err := s.c.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)")
	return err
}

func (p *DatabasePerSandbox) ensureTemplate(ctx context.Context) error {
	p.mu.Lock()
	ready := p.ready
	p.mu.Unlock()
	if ready {
		return nil
	}
	_, err, _ := p.flights.Do("\x00template", func() (any, error) {
		if err := p.buildTemplate(ctx); err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.ready = true
		p.mu.Unlock()
		return nil, nil
	})
	return err
}

// buildTemplate makes sure the template exists with the migration's
// version, rebuilding it otherwise. The steps: CREATE DATABASE with the
// creation mark; COMMENT "building"; migrate; ALTER DATABASE ...
// ALLOW_CONNECTIONS false; COMMENT with the version.
// A template found in any state but the last is dropped and built again.
func (p *DatabasePerSandbox) buildTemplate(ctx context.Context) error {
	c, err := p.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	defer unlockAll(c)
	if err := advisoryLock(ctx, c, p.template, false); err != nil {
		return err
	}
	want := templateMarker(p.migration.Version)
	st, err := databaseState(ctx, c, p.template)
	if err != nil {
		return err
	}
	if st.exists && st.comment == want && !st.invalid() {
		return nil
	}
	tmpl := quoteIdent(p.template)
	if st.exists {
		ours := strings.HasPrefix(st.comment, markerTemplate) || st.comment == markerTemplateBuild || st.comment == "" && st.creating()
		if !ours {
			return fmt.Errorf("%w: template database %s exists without the dbroute marker (comment %q); drop it by hand or use another prefix", dbroute.ErrNotOwned, p.template, st.comment)
		}
		if _, err := c.Exec(ctx, "DROP DATABASE "+tmpl+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("dropping outdated template %s: %w", p.template, err)
		}
	}
	if _, err := c.Exec(ctx, "CREATE DATABASE "+tmpl+" CONNECTION LIMIT "+strconv.Itoa(creationConnLimit)); err != nil {
		return fmt.Errorf("creating template %s: %w", p.template, err)
	}
	p.step("template-created")
	if _, err := c.Exec(ctx, "COMMENT ON DATABASE "+tmpl+" IS "+quoteLiteral(markerTemplateBuild)); err != nil {
		return fmt.Errorf("marking template %s: %w", p.template, err)
	}
	p.step("template-commented")
	if err := p.migrate(ctx); err != nil {
		if !pgerr.Unreachable(err) {
			// The migration failed, not the server: drop what it left
			// (on the admin connection, which the failure did not
			// touch). Otherwise the next attempt drops it.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_, derr := c.Exec(dctx, "DROP DATABASE IF EXISTS "+tmpl+" WITH (FORCE)")
			return errors.Join(err, derr)
		}
		return err
	}
	p.step("template-migrated")
	// Nobody connects to the template from now on: a session on it (an
	// operator's psql, a monitoring agent visiting every database) would
	// make every clone fail with "source database is being accessed by
	// other users".
	if _, err := c.Exec(ctx, "ALTER DATABASE "+tmpl+" WITH ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("closing template %s to connections: %w", p.template, err)
	}
	if _, err := c.Exec(ctx, "COMMENT ON DATABASE "+tmpl+" IS "+quoteLiteral(want)); err != nil {
		return fmt.Errorf("marking template %s: %w", p.template, err)
	}
	p.step("template-marked")
	return nil
}

// migrate applies the migration to the template in one transaction, on a
// connection of its own that is closed before anything is cloned.
func (p *DatabasePerSandbox) migrate(ctx context.Context) error {
	cc := p.dsn.ConnConfig.Copy()
	cc.Database = p.template
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connecting to template %s: %w", p.template, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return p.migration.apply(ctx, tx) })
}
