package provision_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

// The database-per-sandbox provisioner names databases by a documented rule;
// IDs too long for PostgreSQL's 63-byte names end in a hash.
func ExampleDatabasePerSandbox_Name() {
	p, _ := provision.NewDatabasePerSandbox("postgres://admin@db-test:5432/postgres", provision.Migration{})
	defer p.Close()
	for _, id := range []string{"pr-42", "feature-checkout-redesign-with-a-very-long-branch-name-2026"} {
		name, _ := p.Name(id)
		fmt.Println(name)
	}
	fmt.Println(p.Template())
	// Output:
	// sbx_pr_42
	// sbx_feature_checkout_redesign_with_a_very_long_27d65a4042234516
	// sbx__template
}

// A complete set-up: a guarded baseline, a database per sandbox cloned
// from a migrated template, only for sandboxes in the route table, and a
// reaper for the ones that are gone (the router closes their pools).
func ExampleNewDatabasePerSandbox() {
	ctx := context.Background()
	table := routes.New()
	go table.Sync(ctx, routes.HTTP("http://routes.internal/sandboxes", nil))

	cfg, err := pgxpool.ParseConfig("postgres://app@db-prod:5432/shop")
	if err != nil {
		log.Fatal(err)
	}
	dbroute.Guard(cfg)
	baseline, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	provider, err := provision.NewDatabasePerSandbox("postgres://admin@db-test:5432/postgres", provision.Migration{
		Version: "2026-11-27.1",
		Apply: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric NOT NULL)`)
			return err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	router, err := dbroute.New(baseline, provider,
		dbroute.WithRoutes(table),
		dbroute.WithLogger(slog.Default()),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer router.Close()

	go func() {
		for range time.Tick(time.Minute) {
			if dropped, err := provider.Reap(ctx, table); err != nil || len(dropped) > 0 {
				slog.Info("reaped test databases", "sandboxes", dropped, "err", err)
			}
		}
	}()

	// Handlers use router where they used the pool.
	_, err = router.Exec(ctx, "INSERT INTO orders (total) VALUES ($1)", 42)
	_ = err
}

// A database per sandbox on MariaDB, for a sqlroute.Router (database/sql):
// a guarded baseline *sql.DB, and test databases created, migrated and
// marked on a sandbox's first request, named by the same rule as on
// PostgreSQL. Nothing here talks to a server: the constructors connect on
// first use.
func ExampleNewMySQLDatabasePerSandbox() {
	cfg, err := mysql.ParseDSN("app@tcp(db-prod:3306)/shop")
	if err != nil {
		log.Fatal(err)
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		log.Fatal(err)
	}
	baseline := sql.OpenDB(sqlroute.Guard(connector)) // refuses sandbox contexts
	defer baseline.Close()

	provider, err := provision.NewMySQLDatabasePerSandbox("admin@tcp(db-test:3306)/", provision.MySQLMigration{
		Version: "2026-11-27.1",
		Apply: func(ctx context.Context, c *sql.Conn) error {
			_, err := c.ExecContext(ctx, "CREATE TABLE orders (id BIGINT PRIMARY KEY, total DECIMAL(10,2) NOT NULL)")
			return err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer provider.Close()
	router, err := sqlroute.New(baseline, provider, sqlroute.WithRoutes(routes.New()))
	if err != nil {
		log.Fatal(err)
	}
	defer router.Close()

	name, _ := provider.Name("pr-42")
	fmt.Println(name)
	// Output:
	// sbx_pr_42
}

// A schema per sandbox in one test database: each sandbox's pool has its
// search_path set to the sandbox's schema, named as a database would be.
func ExampleNewSchemaPerSandbox() {
	provider, err := provision.NewSchemaPerSandbox("postgres://app@db-test:5432/shop_test", provision.Migration{
		Version: "2026-11-27.1",
		Apply: func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric NOT NULL)`)
			return err
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer provider.Close()
	name, _ := provider.Name("pr-42")
	fmt.Println(name)
	// Output:
	// sbx_pr_42
}
