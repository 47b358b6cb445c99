package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Every run of the shop has databases of its own, named after a random run
// ID: its production database sandboxkit_shop_<run>, and the test
// databases of its sandboxes shop_<run>_<sandbox> cloned from the template
// shop_<run>__template. Two runs at once (a `go run ./examples/shop` while
// `-serve` is up, two test binaries) never touch each other's data. A run
// drops its databases when it stops, on Ctrl-C too; the databases of a run
// that was killed before it could are dropped by the next run that starts,
// which knows the owner is gone because nobody holds its run lock any more.
const (
	productionPrefix = "sandboxkit_shop_"
	testPrefix       = "shop_"
	// runLockClass is the first key of the session-level advisory lock
	// each run holds on its run ID for as long as it runs (two int4 keys:
	// a key space apart from dbroute's bigint locks).
	runLockClass = 0x5b0b
)

// runName matches the production database of a run and captures its ID.
var runName = regexp.MustCompile(`^` + productionPrefix + `([a-z0-9]{8})$`)

// newSettings returns the settings of a new run on the server of
// databaseURL.
func newSettings(databaseURL string) settings {
	run := strings.ToLower(rand.Text()[:8])
	return settings{
		databaseURL: databaseURL,
		run:         run,
		database:    productionPrefix + run,
		prefix:      testPrefix + run + "_",
		mysqlDSN:    defaultMySQLDSN,
		redisAddr:   defaultRedisAddr,
	}
}

// databases returns every database name of the run whose production
// database is production, and the LIKE pattern of its test databases.
func runDatabases(run string) (production, template, testPattern string) {
	prefix := testPrefix + run + "_"
	return productionPrefix + run, prefix + "_template", strings.ReplaceAll(prefix, "_", `\_`) + "%"
}

// lockRun takes the run lock of sh's run (shared: whoever else looks
// after the run's databases, a test say, may hold it too) on a connection
// of its own, kept until the shop closes, then finds the runs that were
// killed (those whose lock nobody holds) and takes their locks too, for
// dropKilledRuns: another shop starting meanwhile takes them for alive
// and leaves them alone.
func (sh *shop) lockRun(ctx context.Context, admin *pgx.Conn) error {
	conn, err := sh.connect(ctx, "")
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock_shared($1, hashtext($2))`, runLockClass, sh.set.run); err != nil {
		conn.Close(context.Background())
		return fmt.Errorf("taking the run lock: %w", err)
	}
	sh.onClose(func() { conn.Close(context.Background()) }) // releases the locks
	sh.lockConn = conn
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1`, strings.ReplaceAll(productionPrefix, "_", `\_`)+"%")
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, name := range names {
		m := runName.FindStringSubmatch(name)
		if m == nil || m[1] == sh.set.run {
			continue
		}
		var free bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, runLockClass, m[1]).Scan(&free); err != nil {
			return err
		}
		if free {
			sh.killedRuns = append(sh.killedRuns, m[1])
		} // else that run is alive, or another shop is dropping it
	}
	return nil
}

// dropKilledRuns drops what the runs lockRun found killed left in MariaDB
// and Redis, then their PostgreSQL databases, and lets their locks go.
// PostgreSQL goes last because its database names are how a killed run is
// found: a shop killed in the middle leaves the rest to the next one.
func (sh *shop) dropKilledRuns(ctx context.Context) error {
	for _, run := range sh.killedRuns {
		err := sh.dropOtherStores(ctx, run)
		if err == nil {
			err = sh.query(ctx, "", func(admin *pgx.Conn) error { return dropRun(ctx, admin, run) })
		}
		if err == nil {
			_, err = sh.lockConn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, runLockClass, run)
		}
		if err != nil {
			return fmt.Errorf("dropping what a killed run %s left: %w", run, err)
		}
	}
	sh.killedRuns = nil
	return nil
}

// dropRun drops every database of run: production, template and test
// databases. WITH (FORCE) ends sessions still connected to them.
func dropRun(ctx context.Context, admin *pgx.Conn, run string) error {
	production, template, testPattern := runDatabases(run)
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname = $2`, testPattern, template)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	// Test databases first, then their template, then production.
	for _, name := range append(names, production) {
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return err
		}
	}
	return nil
}

// dropDatabases drops the databases of sh's run. It runs when the shop
// closes, after the pools are closed, with a context of its own: on
// Ctrl-C the run's context is already done.
func (sh *shop) dropDatabases() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	admin, err := sh.connect(ctx, "")
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	return dropRun(ctx, admin, sh.set.run)
}
