package dbroute_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
)

// TestGuardTracerSetAfterGuard: a tracer set after Guard (the usual place
// for an otelpgx line) must not quietly remove the statement guard. The
// pool refuses its connections instead; wrapping the guard's tracer in a
// multitracer keeps the guard and works.
func TestGuardTracerSetAfterGuard(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	e.Baseline(t)
	for _, how := range []string{"replaced", "multitracer, guard first", "multitracer, guard last"} {
		t.Run(how, func(t *testing.T) {
			insert := "INSERT INTO items (owner) VALUES ('" + how + "')"
			cfg, err := pgxpool.ParseConfig(e.DSN(pgtest.BaselineDB()))
			if err != nil {
				t.Fatal(err)
			}
			cfg.MaxConns = 1
			cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{e.BaseSch}.Sanitize()
			dbroute.Guard(cfg)
			user := &countingTracer{}
			switch how {
			case "replaced":
				cfg.ConnConfig.Tracer = user
			case "multitracer, guard first":
				// A tracer after the guard could drop its refusal.
				cfg.ConnConfig.Tracer = multitracer.New(cfg.ConnConfig.Tracer, detachTracer{user})
			default:
				cfg.ConnConfig.Tracer = multitracer.New(detachTracer{user}, cfg.ConnConfig.Tracer)
			}
			p, err := pgxpool.NewWithConfig(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			c, err := p.Acquire(context.Background())
			if how != "multitracer, guard last" {
				if err == nil || !strings.Contains(err.Error(), "replaced after Guard") {
					if c != nil {
						_, xerr := c.Exec(pgtest.SandboxCtx("pr-1"), insert)
						c.Release()
						t.Errorf("sandbox statement on a connection acquired without one: %v", xerr)
					}
					t.Errorf("acquire: err = %v, want the pool to refuse connections without the guard", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Exec(pgtest.SandboxCtx("pr-1"), insert); !errors.Is(err, dbroute.ErrSandboxOnBaseline) {
					t.Errorf("sandbox statement: err = %v, want ErrSandboxOnBaseline", err)
				}
				if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
					t.Errorf("baseline statement: %v", err)
				}
				c.Release()
				if user.n.Load() == 0 {
					t.Errorf("the user's tracer saw no statement")
				}
			}
			dsn, table := e.BaselineItems()
			if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = $1", how); n != 0 {
				t.Errorf("baseline holds %d sandbox rows", n)
			}
		})
	}
}

// TestErrorClassOfUnusableTestDatabase: pools connect lazily, so a test
// database the server refuses to connect to (no such database, no such
// role) is first seen on a statement; it is still ErrNoTestDatabase.
func TestErrorClassOfUnusableTestDatabase(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	p, err := dbroute.Static(map[string]string{
		"no-db":   e.DSN(e.Name("nosuchdb")),
		"no-role": "postgres://nosuchrole" + e.Tag + "@127.0.0.1:5432/" + pgtest.SchemasDB(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := e.Router(t, p)
	for _, id := range []string{"no-db", "no-role"} {
		ctx := pgtest.SandboxCtx(id)
		_, err := r.Exec(ctx, "SELECT 1")
		var one int
		rowErr := r.QueryRow(ctx, "SELECT 1").Scan(&one)
		for what, err := range map[string]error{"Exec": err, "QueryRow": rowErr} {
			if !errors.Is(err, dbroute.ErrNoTestDatabase) || errors.Is(err, dbroute.ErrUnavailable) {
				t.Errorf("%s %s: err = %v, want ErrNoTestDatabase only", id, what, err)
			}
		}
	}
}

// TestTemplateInUseDoesNotBlockClones: a session on the template (an
// operator's psql, a monitoring agent that visits every database) must
// not turn every new sandbox into a permanent ErrNoTestDatabase.
func TestTemplateInUseDoesNotBlockClones(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	p, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	r := e.Router(t, p)
	if _, err := r.Exec(pgtest.SandboxCtx("a"), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if conn, err := pgx.Connect(ctx, e.DSN(p.Template())); err == nil {
		defer conn.Close(ctx)
	}
	if _, err := r.Exec(pgtest.SandboxCtx("b"), "INSERT INTO items (owner) VALUES ('b')"); err != nil {
		t.Errorf("new sandbox while someone tries to use the template: %v", err)
	}
}

// TestErrorClassOfDroppedTestDatabase: a provisioned test database
// dropped elsewhere (Reap or Destroy in another process) is a transient
// failure, whichever method meets it: ErrUnavailable, and a later request
// creates it again.
func TestErrorClassOfDroppedTestDatabase(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	p, err := provision.NewDatabasePerSandbox(e.URL, pgtest.ItemsMigration("v1", nil), provision.WithPrefix(e.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	r := e.Router(t, p)
	methods := map[string]func(ctx context.Context) error{
		"exec": func(ctx context.Context) error {
			_, err := r.Exec(ctx, "INSERT INTO items (owner) VALUES ('x')")
			return err
		},
		"queryrow": func(ctx context.Context) error {
			var id int64
			return r.QueryRow(ctx, "INSERT INTO items (owner) VALUES ('x') RETURNING id").Scan(&id)
		},
		"batch": func(ctx context.Context) error {
			b := &pgx.Batch{}
			b.Queue("INSERT INTO items (owner) VALUES ('x')")
			return r.SendBatch(ctx, b).Close()
		},
	}
	for id, call := range methods {
		t.Run(id, func(t *testing.T) {
			ctx := pgtest.SandboxCtx(id)
			if err := call(ctx); err != nil {
				t.Fatal(err)
			}
			name, _ := p.Name(id)
			e.Exec(t, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			// The pool's connections were ended by the drop, then its
			// new ones find no database: each failure is transient, and
			// a few requests later the sandbox has a fresh test database.
			for i := 0; ; i++ {
				err := call(ctx)
				if err == nil {
					break
				}
				if !errors.Is(err, dbroute.ErrUnavailable) || errors.Is(err, dbroute.ErrNoTestDatabase) {
					t.Fatalf("statement %d after the drop: err = %v, want ErrUnavailable only", i, err)
				}
				if i == 5 {
					t.Fatalf("still failing after %d requests: %v", i, err)
				}
			}
		})
	}
}

// detachTracer counts statements and detaches their context from its
// cancellation, as a tracer may.
type detachTracer struct{ *countingTracer }

func (d detachTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithoutCancel(d.countingTracer.TraceQueryStart(ctx, c, data))
}
