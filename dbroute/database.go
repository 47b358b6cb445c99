package dbroute

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"

	"github.com/sandboxkit/sandboxkit/propagation"
)

const (
	sqlDatabaseComment = `SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1`
	sqlDatabases       = `SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE starts_with(datname, $1)`
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
		return nil, fmt.Errorf("%w: sandbox %q: %w", ErrNoTestDatabase, id, err)
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
	if text, exists, err := comment(ctx, c, sqlDatabaseComment, name); err != nil || exists {
		if err != nil {
			return err
		}
		return p.checkOwner(id, name, text)
	}
	_, err = c.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)+" TEMPLATE "+quoteIdent(p.template))
	if isCode(err, codeDuplicateDatabase) {
		// Another process won (one that does not take our locks, or an
		// older version): use its database if it is a test database of
		// this sandbox.
		text, _, cerr := comment(ctx, c, sqlDatabaseComment, name)
		if cerr != nil {
			return cerr
		}
		return p.checkOwner(id, name, text)
	}
	if err != nil {
		return fmt.Errorf("creating database %s from %s: %w", name, p.template, err)
	}
	marker := sandboxMarker(id, p.cfg.now())
	if _, err := c.Exec(ctx, "COMMENT ON DATABASE "+quoteIdent(name)+" IS "+quoteLiteral(marker)); err != nil {
		// We created it a moment ago and hold its lock: it is ours.
		_, derr := c.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)")
		return errors.Join(fmt.Errorf("marking database %s: %w", name, err), derr)
	}
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
// version, rebuilding it otherwise.
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
	text, exists, err := comment(ctx, c, sqlDatabaseComment, p.template)
	if err != nil {
		return err
	}
	if exists && text == want {
		return nil
	}
	tmpl := quoteIdent(p.template)
	if exists {
		if !strings.HasPrefix(text, markerTemplate) && text != markerTemplateBuild {
			return fmt.Errorf("%w: template database %s exists without the dbroute marker (comment %q); drop it by hand or use another prefix", ErrNotOwned, p.template, text)
		}
		if _, err := c.Exec(ctx, "DROP DATABASE "+tmpl+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("dropping outdated template %s: %w", p.template, err)
		}
	}
	if _, err := c.Exec(ctx, "CREATE DATABASE "+tmpl); err != nil {
		return fmt.Errorf("creating template %s: %w", p.template, err)
	}
	if _, err := c.Exec(ctx, "COMMENT ON DATABASE "+tmpl+" IS "+quoteLiteral(markerTemplateBuild)); err != nil {
		return fmt.Errorf("marking template %s: %w", p.template, err)
	}
	if err := p.migrate(ctx); err != nil {
		_, derr := c.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+tmpl+" WITH (FORCE)")
		return errors.Join(err, derr)
	}
	if _, err := c.Exec(ctx, "COMMENT ON DATABASE "+tmpl+" IS "+quoteLiteral(want)); err != nil {
		return fmt.Errorf("marking template %s: %w", p.template, err)
	}
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

// Provisioned implements [Reclaimer].
func (p *DatabasePerSandbox) Provisioned(ctx context.Context) ([]Provisioned, error) {
	return listOwned(ctx, p.admin, sqlDatabases, p.cfg.prefix)
}

// Destroy implements [Reclaimer]: it drops sandbox id's database with
// (FORCE), ending the sessions still connected to it.
func (p *DatabasePerSandbox) Destroy(ctx context.Context, id string) error {
	name, err := p.Name(id)
	if err != nil {
		return fmt.Errorf("dbroute: Destroy: %w", err)
	}
	c, err := p.admin.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("dbroute: Destroy %q: %w", id, err)
	}
	defer c.Release()
	defer unlockAll(c)
	if err := advisoryLock(ctx, c, name, false); err != nil {
		return fmt.Errorf("dbroute: Destroy %q: %w", id, err)
	}
	text, exists, err := comment(ctx, c, sqlDatabaseComment, name)
	if err != nil {
		return fmt.Errorf("dbroute: Destroy %q: %w", id, err)
	}
	if !exists {
		return nil
	}
	if err := p.checkOwner(id, name, text); err != nil {
		return fmt.Errorf("dbroute: Destroy %q: %w", id, err)
	}
	if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dbroute: Destroy %q: %w", id, err)
	}
	return nil
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
