package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/httpmw"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSettings are the shop's settings for a test: the server of
// SANDBOXKIT_TEST_DATABASE_URL, and database names of the test's own, so
// that tests and `go run` can run side by side. The databases are dropped
// when the test ends.
func testSettings(t *testing.T) settings {
	suffix := strings.ToLower(rand.Text()[:8])
	set := settings{
		databaseURL: cmp.Or(os.Getenv("SANDBOXKIT_TEST_DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/postgres"),
		database:    "sandboxkit_shop_test_" + suffix,
		prefix:      "shopt" + suffix + "_",
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, set.databaseURL)
		if err != nil {
			return // never started
		}
		defer admin.Close(ctx)
		for _, db := range []string{set.database, set.prefix + "_template", set.prefix + "pr_42"} {
			if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
				t.Errorf("dropping %s: %v", db, err)
			}
		}
	})
	return set
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
	var out strings.Builder
	err := play(ctx, &out, set)
	skipWithoutDatabase(t, err)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{
		"1. A production request", "2. The same request in sandbox pr-42", "3. An outsider forging",
		"4. A malformed sandbox header", "5. A runaway loop", "6. Teardown", "7. Messages of a removed and of an unknown sandbox", " 0 failed",
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
