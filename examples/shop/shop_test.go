package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/httpmw"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSettings are the shop's settings for a test: the server of
// SANDBOXKIT_TEST_DATABASE_URL and a run of its own, as `go run` has. The
// run's databases are dropped when the test ends, whatever the shop did.
//
// The test holds the run's lock too until then, so that no other shop
// starting meanwhile takes the databases for those of a killed run.
func testSettings(t *testing.T) settings {
	set, _ := testSettingsHeld(t)
	return set
}

// testSettingsHeld is testSettings, and returns a function that releases
// the test's hold of the run lock early.
func testSettingsHeld(t *testing.T) (settings, func()) {
	set := newSettings(cmp.Or(os.Getenv("SANDBOXKIT_TEST_DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/postgres"))
	release := func() {}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if hold, err := pgx.Connect(ctx, set.databaseURL); err == nil { // else the shop will say why
		if _, err := hold.Exec(ctx, `SELECT pg_advisory_lock_shared($1, hashtext($2))`, runLockClass, set.run); err != nil {
			t.Fatal(err)
		}
		release = sync.OnceFunc(func() { hold.Close(context.Background()) })
	}
	t.Cleanup(func() {
		release()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, set.databaseURL)
		if err != nil {
			return // never started
		}
		defer admin.Close(ctx)
		if err := dropRun(ctx, admin, set.run); err != nil {
			t.Errorf("dropping the databases of run %s: %v", set.run, err)
		}
	})
	return set, release
}

// runDatabasesLeft returns the databases of run that exist.
func runDatabasesLeft(ctx context.Context, t *testing.T, databaseURL, run string) []string {
	t.Helper()
	admin, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	production, _, testPattern := runDatabases(run)
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2`, production, testPattern)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// startShop starts a shop of the test's own, closed when the test ends,
// and returns it with the headers of a ticket for pr-42.
func startShop(ctx context.Context, t *testing.T) (*shop, http.Header) {
	t.Helper()
	sh, err := start(ctx, testSettings(t))
	skipWithoutDatabase(t, err)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.close)
	h, err := sh.ticketHeader(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return sh, h
}

// skipWithoutDatabase skips t loudly when err says PostgreSQL cannot be
// reached, unless SANDBOXKIT_REQUIRE_DATABASE=1.
func skipWithoutDatabase(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, errNoDatabase) {
		return
	}
	if os.Getenv("SANDBOXKIT_REQUIRE_DATABASE") == "1" {
		t.Fatalf("SANDBOXKIT_REQUIRE_DATABASE=1 and %v", err)
	}
	t.Skipf("SKIPPED: no PostgreSQL for the end-to-end scenario (set SANDBOXKIT_REQUIRE_DATABASE=1 to fail instead): %v", err)
}

// TestScenario plays the scenario of `go run ./examples/shop`: every
// check must pass. It then looks at the databases itself.
func TestScenario(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	set := testSettings(t)
	set.keepDatabases = true // looked at below
	var out strings.Builder
	err := play(ctx, &out, set)
	skipWithoutDatabase(t, err)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{
		"1. A production request", "2. The same request in sandbox pr-42", "3. An outsider forging",
		"4. A malformed sandbox header", "5. A bug that would write test data to production", "6. A runaway loop",
		"7. Teardown", "8. Messages of a removed and of an unknown sandbox", " 0 failed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q (part %d)", want, i+1)
		}
	}
	if strings.Contains(out.String(), "✗") {
		t.Error("output has a ✗ although play returned nil")
	}

	// Independently of the scenario's own checks: production holds only
	// orders priced by the baseline cart, each shipped by the baseline
	// consumer, and pr-42's test database is gone.
	admin, err := pgx.Connect(ctx, set.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var leftovers int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, set.prefix+"pr_42").Scan(&leftovers); err != nil {
		t.Fatal(err)
	}
	if leftovers != 0 {
		t.Errorf("pr-42's test database %spr_42 still exists", set.prefix)
	}
	cfg, err := pgx.ParseConfig(set.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = set.database
	prod, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close(ctx)
	var orders, foreign, unshipped, shippedElsewhere int
	if err := prod.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE priced_by <> 'cart'),
		count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM shipments s WHERE s.order_id = o.id)),
		(SELECT count(*) FROM shipments WHERE shipped_by <> 'shipping')
		FROM orders o`).Scan(&orders, &foreign, &unshipped, &shippedElsewhere); err != nil {
		t.Fatal(err)
	}
	if orders == 0 || foreign != 0 || unshipped != 0 || shippedElsewhere != 0 {
		t.Errorf("production: %d orders, %d not priced by the baseline cart, %d unshipped, %d shipped by a sandbox consumer",
			orders, foreign, unshipped, shippedElsewhere)
	}
}

// The checks read real state: with an edge that trusts everyone, the forged
// header of step 3 reaches the sandbox, and exactly the checks of step 3
// fail (so does play).
func TestScenarioCatchesOpenEdge(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	set := testSettings(t)
	set.gatewayOptions = []httpmw.HandlerOption{httpmw.TrustAll()}
	set.patience = time.Second // the baseline consumer will never ship step 3's order
	var out strings.Builder
	err := play(ctx, &out, set)
	skipWithoutDatabase(t, err)
	t.Log("\n" + out.String())
	if err == nil {
		t.Fatal("play succeeded with a gateway that trusts every peer")
	}
	steps := strings.Split(out.String(), "\n3. ")
	if len(steps) != 2 {
		t.Fatal("step 3 missing")
	}
	before, rest, _ := strings.Cut(steps[1], "\n4. ")
	if strings.Contains(steps[0], "✗") || strings.Contains(rest, "✗") {
		t.Error("checks outside step 3 failed")
	}
	for _, want := range []string{
		"✗ markers stripped at the gateway",
		"✗ order #",
		"✗ audited: stripped at the gateway",
	} {
		if !strings.Contains(before, want) {
			t.Errorf("step 3 lacks %q", want)
		}
	}
}

// TestNoDatabase: without PostgreSQL the shop says so in one sentence that
// says what to do, and starts nothing.
func TestNoDatabase(t *testing.T) {
	set := testSettings(t)
	set.databaseURL = "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2"
	var out strings.Builder
	err := play(context.Background(), &out, set)
	if !errors.Is(err, errNoDatabase) {
		t.Fatalf("play = %v, want errNoDatabase", err)
	}
	msg := err.Error()
	for _, want := range []string{"cannot connect to PostgreSQL at postgres://postgres@127.0.0.1:1/postgres", "DATABASE_URL", "docker run"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	if strings.Count(msg, ". ") > 0 || strings.Contains(msg, "\n") {
		t.Errorf("want one sentence, got: %s", msg)
	}
	if out.Len() != 0 {
		t.Errorf("printed before failing: %s", out.String())
	}
}

// Without dbroute.Guard on the production pool, the buggy handler of step
// 5 writes pr-42's row into production, and exactly the checks of step 5
// fail.
func TestScenarioCatchesMissingGuard(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	set := testSettings(t)
	set.noGuard = true
	var out strings.Builder
	err := play(ctx, &out, set)
	skipWithoutDatabase(t, err)
	t.Log("\n" + out.String())
	if err == nil {
		t.Fatal("play succeeded without the guard")
	}
	before, step, ok := strings.Cut(out.String(), "\n5. ")
	if !ok {
		t.Fatal("step 5 missing")
	}
	step, rest, _ := strings.Cut(step, "\n6. ")
	if strings.Contains(before, "✗") || strings.Contains(rest, "✗") {
		t.Error("checks outside step 5 failed")
	}
	for _, want := range []string{"→ 201", "✗ the write was refused", "✗ nothing reached production", "✗ audited: rejected"} {
		if !strings.Contains(step, want) {
			t.Errorf("step 5 lacks %q", want)
		}
	}
	// The failed check shows the row that reached production.
	m := regexp.MustCompile(`✗ nothing reached production: (\d+) order\(s\) there before, (\d+) after`).FindStringSubmatch(step)
	if m == nil || m[1] == m[2] {
		t.Errorf("step 5 does not show production's orders before and after the bug's write: %v", m)
	}
}

// Two runs at once, and a run while another shop is up (as with -serve),
// all succeed: each has databases of its own, drops them at the end, and
// the shop that stays up keeps serving its sandbox.
func TestRunsSideBySide(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	up, h := startShop(ctx, t) // the shop of -serve
	if a, err := up.checkout(ctx, h, "mug", 3); err != nil || a.status != http.StatusOK || a.receipt.Sandbox != pr42ID {
		t.Fatalf("sandbox checkout before: %v, %v", a, err)
	}

	sets := []settings{testSettings(t), testSettings(t)}
	outs := make([]strings.Builder, len(sets))
	errs := make([]error, len(sets))
	var wg sync.WaitGroup
	for i := range sets {
		wg.Go(func() { errs[i] = play(ctx, &outs[i], sets[i]) })
	}
	wg.Wait()
	for i := range sets {
		if errs[i] != nil {
			t.Errorf("run %d: %v\n%s", i, errs[i], outs[i].String())
		}
		if left := runDatabasesLeft(ctx, t, sets[i].databaseURL, sets[i].run); len(left) != 0 {
			t.Errorf("run %d left its databases: %v", i, left)
		}
	}
	if a, err := up.checkout(ctx, h, "mug", 3); err != nil || a.status != http.StatusOK || a.receipt.Sandbox != pr42ID ||
		a.receipt.Database != up.testDatabase() {
		t.Errorf("sandbox checkout after two other runs: %v, %v", a, err)
	}
}

// A run killed before it could drop its databases leaves them; the next
// run that starts drops them (or another test's run starting meanwhile
// did), and never those of a run that is alive.
func TestKilledRunCleanedUp(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	killed, release := testSettingsHeld(t)
	killed.keepDatabases = true // what SIGKILL leaves
	sh, err := start(ctx, killed)
	skipWithoutDatabase(t, err)
	if err != nil {
		t.Fatal(err)
	}
	alive, err := start(ctx, testSettings(t))
	if err != nil {
		sh.close()
		t.Fatal(err)
	}
	defer alive.close()
	if left := runDatabasesLeft(ctx, t, killed.databaseURL, killed.run); len(left) == 0 {
		t.Fatal("the run to kill has no databases")
	}
	sh.close() // releases its run lock, keeps its databases
	release()
	next, err := start(ctx, testSettings(t))
	if err != nil {
		t.Fatal(err)
	}
	defer next.close()
	if left := runDatabasesLeft(ctx, t, killed.databaseURL, killed.run); len(left) != 0 {
		t.Errorf("the killed run's databases are still there: %v", left)
	}
	if left := runDatabasesLeft(ctx, t, alive.set.databaseURL, alive.set.run); len(left) == 0 {
		t.Error("the next run dropped the databases of a run that is alive")
	}
}

// When pr-42's test database disappears under a running shop (dropped by
// hand, or by a run of an older demo), sandbox requests fail with 503
// "test database unavailable" at most twice, and then land in a new test
// database: the pool does not stay broken.
func TestTestDatabaseDroppedUnderneath(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sh, h := startShop(ctx, t)
	if a, err := sh.checkout(ctx, h, "mug", 1); err != nil || a.status != http.StatusOK || a.receipt.Database != sh.testDatabase() {
		t.Fatalf("first sandbox checkout: %v, %v", a, err)
	}
	admin, err := pgx.Connect(ctx, sh.set.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{sh.testDatabase()}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	// A connection the pool held when the database went is refused first
	// (57P01, "terminating connection"), then the pool finds the database
	// gone ("its test database was dropped"), then it creates it again.
	var a answer
	for try := range 3 {
		if a, err = sh.checkoutPatiently(ctx, h, "mug", 1); err != nil {
			t.Fatal(err)
		}
		t.Logf("checkout %d after the drop: %v", try+1, a)
		if a.status == http.StatusOK {
			break
		}
		if a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, dbroute.ErrUnavailable.Error()) {
			t.Fatalf("checkout %d after the drop: %v; want 200, or 503 saying the test database is unavailable", try+1, a)
		}
	}
	if a.status != http.StatusOK || a.receipt.Sandbox != pr42ID || a.receipt.Database != sh.testDatabase() || a.receipt.Order != 1 {
		t.Errorf("checkout after the drop: %v; want order #1 in a new %s", a, sh.testDatabase())
	}
}

// A CREATE DATABASE that the server carried out but the shop saw fail
// (Ctrl-C during it: the client gives up, the server commits) is dropped
// when the shop stops all the same. The database made beforehand stands
// for the one the server created.
func TestFailedCreateDropped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set := testSettings(t)
	admin, err := pgx.Connect(ctx, set.databaseURL)
	if err != nil {
		skipWithoutDatabase(t, fmt.Errorf("%w: %v", errNoDatabase, err))
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{set.database}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	sh, err := start(ctx, set)
	if err == nil {
		sh.close()
		t.Fatal("the shop started on a production database that was there already")
	}
	if left := runDatabasesLeft(ctx, t, set.databaseURL, set.run); len(left) != 0 {
		t.Errorf("after a failed start (%v), the run's databases are still there: %v", err, left)
	}
}

// Ctrl-C while the shop connects to PostgreSQL is no missing PostgreSQL:
// the shop says it was interrupted, not to start a server.
func TestInterruptedConnectIsNoMissingDatabase(t *testing.T) {
	set := testSettings(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := play(ctx, io.Discard, set)
	if err == nil || errors.Is(err, errNoDatabase) || !errors.Is(err, context.Canceled) {
		t.Errorf("play after Ctrl-C = %v, want context.Canceled and no errNoDatabase", err)
	}
}
