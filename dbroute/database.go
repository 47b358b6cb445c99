package dbroute

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// DatabasePerSandbox is a [Reclaimer] that gives each sandbox its own
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
// [ErrUnavailable] when their open times out ([WithOpenTimeout]), and a
// template rebuild waits likewise. Put tcp_keepalives_idle,
// tcp_keepalives_interval and tcp_keepalives_count in the admin
// connection string (or the server's configuration) to shorten that.
// A process that is killed closes its socket: its locks go at once.
//
// It is safe for concurrent use. Close it (or the [Router] that owns it)
// to close its admin pool.
type DatabasePerSandbox struct {
	cfg       config
	dsn       *pgxpool.Config // the admin connection string, parsed: base of every sandbox pool
	admin     *pgxpool.Pool
	migration Migration
	template  string

	flights singleflight.Group
	mu      sync.Mutex
	ready   bool // the template has been checked or built by this process
}

// NewDatabasePerSandbox returns a provider that creates sandbox databases on
// the server adminDSN points at. adminDSN names a role allowed to create
// databases and a maintenance database to connect to (such as "postgres");
// sandbox pools use the same settings with the sandbox's database. It reads
// [WithPrefix] and [WithClock]. It does not connect until the first sandbox
// needs a database.
func NewDatabasePerSandbox(adminDSN string, m Migration, opts ...Option) (*DatabasePerSandbox, error) {
	cfg := newConfig(opts)
	if err := cfg.validateProvider(); err != nil {
		return nil, err
	}
	dsn, err := pgxpool.ParseConfig(adminDSN)
	if err != nil {
		return nil, fmt.Errorf("dbroute: admin connection string: %w", err)
	}
	acfg := dsn.Copy()
	acfg.MaxConns = 4
	acfg.MinConns = 0
	admin, err := pgxpool.NewWithConfig(context.Background(), acfg)
	if err != nil {
		return nil, fmt.Errorf("dbroute: admin pool: %w", err)
	}
	return &DatabasePerSandbox{
		cfg:       cfg,
		dsn:       dsn,
		admin:     admin,
		migration: m,
		template:  templateName(cfg.prefix),
	}, nil
}

// Name returns the name of sandbox id's database: the prefix followed by
// the ID with '-' replaced by '_' when that fits in 62 bytes; otherwise 63
// bytes ending in '_' and 16 hex digits of the ID's SHA-256 (see the
// package documentation).
func (p *DatabasePerSandbox) Name(id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", err
	}
	return objectName(p.cfg.prefix, id), nil
}

// Template returns the name of the template database.
func (p *DatabasePerSandbox) Template() string { return p.template }

// Lookup implements [Provider]: every valid sandbox ID has a database
// (created by Open), so the key is always "".
func (p *DatabasePerSandbox) Lookup(id string) (string, error) {
	if err := propagation.ValidateID(id); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoTestDatabase, err)
	}
	return "", nil
}

// Open implements [Provider]: it builds the template if needed, creates
// sandbox id's database if it does not exist, and returns the configuration
// of a pool for it.
func (p *DatabasePerSandbox) Open(ctx context.Context, id, _ string) (*pgxpool.Config, error) {
	name, err := p.Name(id)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoTestDatabase, err)
	}
	_, err, _ = p.flights.Do(name, func() (any, error) { return nil, p.create(ctx, id, name) })
	if err != nil {
		return nil, classify(id, err)
	}
	cfg := p.dsn.Copy()
	cfg.ConnConfig.Database = name
	return cfg, nil
}

func (p *DatabasePerSandbox) create(ctx context.Context, id, name string) error {
	for attempt := 0; ; attempt++ {
		if err := p.ensureTemplate(ctx); err != nil {
			return err
		}
		err := p.clone(ctx, id, name)
		if attempt == 0 && isCode(err, codeInvalidCatalog) {
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

// step reports to the tests that a provisioning step is done.
func (p *DatabasePerSandbox) step(name string) {
	if p.cfg.step != nil {
		p.cfg.step(name)
	}
}

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

// creationConnLimit is the CONNECTION LIMIT every database the provider
// creates starts with (sandbox databases also with ALLOW_CONNECTIONS
// false): the mark that a database of the provider's name is the
// provider's, from the moment it exists until its marker comment is set
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

// clone makes sure sandbox id's database exists, finishing a creation that
// was interrupted. The steps, each recoverable:
//
//  1. CREATE DATABASE ... TEMPLATE ... ALLOW_CONNECTIONS false
//     CONNECTION LIMIT creationConnLimit (unusable, and marked as ours);
//  2. COMMENT ON DATABASE: the sandbox marker;
//  3. ALTER DATABASE ... ALLOW_CONNECTIONS true CONNECTION LIMIT -1.
//
// A database found after step 1 or 2 is finished from where it stopped.
func (p *DatabasePerSandbox) clone(ctx context.Context, id, name string) error {
	c, err := p.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	defer unlockAll(c)
	// Same order everywhere: template, then sandbox.
	if err := advisoryLock(ctx, c, p.template, true); err != nil {
		return err
	}
	if err := advisoryLock(ctx, c, name, false); err != nil {
		return err
	}
	st, err := databaseState(ctx, c, name)
	if err != nil {
		return err
	}
	if !st.exists {
		_, err = c.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)+" TEMPLATE "+quoteIdent(p.template)+
			" ALLOW_CONNECTIONS false CONNECTION LIMIT "+strconv.Itoa(creationConnLimit))
		if isCode(err, codeDuplicateDatabase) {
			// Another process won (one that does not take our locks, or
			// an older version): use its database if it is ours.
			if st, err = databaseState(ctx, c, name); err != nil {
				return err
			}
		} else if err != nil {
			return fmt.Errorf("creating database %s from %s: %w", name, p.template, err)
		} else {
			p.step("created")
			st = dbState{exists: true, limit: creationConnLimit}
		}
	}
	if !st.creating() {
		return p.checkOwner(id, name, st.comment)
	}
	if st.comment == "" {
		marker := sandboxMarker(id, p.cfg.now())
		if _, err := c.Exec(ctx, "COMMENT ON DATABASE "+quoteIdent(name)+" IS "+quoteLiteral(marker)); err != nil {
			return fmt.Errorf("marking database %s: %w", name, err)
		}
		p.step("commented")
		st.comment = marker
	}
	if err := p.checkOwner(id, name, st.comment); err != nil {
		return err
	}
	if _, err := c.Exec(ctx, "ALTER DATABASE "+quoteIdent(name)+" WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1"); err != nil {
		return fmt.Errorf("opening database %s: %w", name, err)
	}
	p.step("opened")
	return nil
}

func (p *DatabasePerSandbox) checkOwner(id, name, text string) error {
	if got, _, ok := owner(p.cfg.prefix, name, text); ok && got == id {
		return nil
	}
	return fmt.Errorf("%w: database %s exists but is not the test database of sandbox %q (comment %q); drop it by hand or use another prefix", ErrNotOwned, name, id, text)
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
	if st.exists && st.comment == want {
		return nil
	}
	tmpl := quoteIdent(p.template)
	if st.exists {
		ours := strings.HasPrefix(st.comment, markerTemplate) || st.comment == markerTemplateBuild || st.comment == "" && st.creating()
		if !ours {
			return fmt.Errorf("%w: template database %s exists without the dbroute marker (comment %q); drop it by hand or use another prefix", ErrNotOwned, p.template, st.comment)
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
		if !unreachable(err) {
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

// Provisioned implements [Reclaimer]: the sandbox databases the provider
// created, and those whose creation was interrupted (Incomplete).
func (p *DatabasePerSandbox) Provisioned(ctx context.Context) ([]Provisioned, error) {
	rows, err := p.admin.Query(ctx, sqlDatabaseList, p.cfg.prefix)
	if err != nil {
		return nil, fmt.Errorf("dbroute: listing test databases: %w", err)
	}
	var out []Provisioned
	var name string
	var st dbState
	_, err = pgx.ForEachRow(rows, []any{&name, &st.comment, &st.allow, &st.limit}, func() error {
		if name == p.template {
			return nil
		}
		id, created, ok := owner(p.cfg.prefix, name, st.comment)
		switch {
		case st.creating() && !st.allow && (ok || st.comment == ""):
			if !ok {
				id = idOf(p.cfg.prefix, name)
			}
			out = append(out, Provisioned{ID: id, Name: name, Created: created, Incomplete: true})
		case ok:
			out = append(out, Provisioned{ID: id, Name: name, Created: created})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dbroute: listing test databases: %w", err)
	}
	slices.SortFunc(out, func(a, b Provisioned) int { return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Name, b.Name)) })
	return out, nil
}

// Destroy implements [Reclaimer]: it drops sandbox id's database with
// (FORCE), ending the sessions still connected to it — also a database
// whose creation was interrupted.
func (p *DatabasePerSandbox) Destroy(ctx context.Context, id string) error {
	name, err := p.Name(id)
	if err != nil {
		return fmt.Errorf("dbroute: Destroy: %w", err)
	}
	if err := p.drop(ctx, name, func(st dbState) error {
		if st.creating() && !st.allow && st.comment == "" {
			return nil
		}
		return p.checkOwner(id, name, st.comment)
	}); err != nil {
		return fmt.Errorf("dbroute: Destroy %q: %w", id, err)
	}
	return nil
}

// dropIncomplete drops database name if its creation was interrupted and
// nobody is finishing it; it reports whether it dropped it.
func (p *DatabasePerSandbox) dropIncomplete(ctx context.Context, name string) (bool, error) {
	dropped := false
	err := p.drop(ctx, name, func(st dbState) error {
		if !st.creating() || st.allow {
			return errKeep
		}
		if _, _, ok := owner(p.cfg.prefix, name, st.comment); !ok && st.comment != "" {
			return errKeep
		}
		dropped = true
		return nil
	})
	if err == errKeep {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("dbroute: dropping interrupted creation %s: %w", name, err)
	}
	return dropped, nil
}

var errKeep = errors.New("keep")

// drop drops database name under its advisory lock if it exists and mine
// approves of its state.
func (p *DatabasePerSandbox) drop(ctx context.Context, name string, mine func(dbState) error) error {
	c, err := p.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	defer unlockAll(c)
	if err := advisoryLock(ctx, c, name, false); err != nil {
		return err
	}
	st, err := databaseState(ctx, c, name)
	if err != nil || !st.exists {
		return err
	}
	if err := mine(st); err != nil {
		return err
	}
	_, err = c.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)")
	return err
}

// idOf is the sandbox ID whose name is name in its short form, or "".
func idOf(prefix, name string) string {
	id := strings.ReplaceAll(strings.TrimPrefix(name, prefix), "_", "-")
	if propagation.ValidateID(id) != nil || objectName(prefix, id) != name {
		return ""
	}
	return id
}

// Close closes the admin pool.
func (p *DatabasePerSandbox) Close() { p.admin.Close() }

// listOwned runs sql (name, comment pairs for names starting with prefix)
// and keeps the objects the library created.
func listOwned(ctx context.Context, q *pgxpool.Pool, sql, prefix string) ([]Provisioned, error) {
	rows, err := q.Query(ctx, sql, prefix)
	if err != nil {
		return nil, fmt.Errorf("dbroute: listing test databases: %w", err)
	}
	var out []Provisioned
	var name, text string
	_, err = pgx.ForEachRow(rows, []any{&name, &text}, func() error {
		if id, created, ok := owner(prefix, name, text); ok {
			out = append(out, Provisioned{ID: id, Name: name, Created: created})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dbroute: listing test databases: %w", err)
	}
	slices.SortFunc(out, func(a, b Provisioned) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}
