package provision_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/routes"
)

// checkProvisioned checks that the objects under prefix are exactly the
// finished ones of ids (and, for databases, the finished template), and
// that each holds rows rows of its own.
func checkProvisioned(t *testing.T, e *pgtest.Env, k kind, rows int, ids ...string) {
	t.Helper()
	var want []string
	for _, id := range ids {
		want = append(want, expectedName(e, id))
	}
	if k.name == "database-per-sandbox" {
		tmpl := e.Prefix + "_template"
		want = append(want, tmpl)
		if c, _, _, _ := e.DBState(t, tmpl); !strings.HasPrefix(c, "sandboxkit/dbroute template version=") {
			t.Errorf("template comment %q: not finished", c)
		}
		for _, id := range ids {
			c, allow, limit, _ := e.DBState(t, expectedName(e, id))
			if !strings.Contains(c, fmt.Sprintf("sandbox=%q", id)) || !allow || limit != -1 {
				t.Errorf("database of %s: comment %q, allow connections %v, limit %d: not finished", id, c, allow, limit)
			}
		}
	}
	slices.Sort(want)
	if got := k.objects(t, e); !slices.Equal(got, want) {
		t.Errorf("objects = %v, want %v", got, want)
	}
	for _, id := range ids {
		dsn, table := k.where(e, expectedName(e, id))
		if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = $1", id); n != rows {
			t.Errorf("%s: %d rows, want %d", id, n, rows)
		}
	}
}

// subEnv gives each case of a test a prefix of its own (a template of its
// own), under the test's tag so that cleanup finds it.
func subEnv(e *pgtest.Env, i int) *pgtest.Env {
	c := *e
	c.Prefix = fmt.Sprintf("%sc%d_", e.Prefix, i)
	return &c
}

// TestProvisionSurvivesCutConnection cuts the provider's admin connection
// before and after each step of provisioning: the request fails with
// ErrUnavailable (transient), and the next one, on a healthy connection,
// finishes the job with nothing left over.
func TestProvisionSurvivesCutConnection(t *testing.T) {
	t.Parallel()
	steps := map[string][]string{
		"database-per-sandbox": {
			"CREATE DATABASE {prefix}_template", "template building", "CREATE TABLE items", "template version=",
			"CREATE DATABASE {name}", "sandbox=", "ALLOW_CONNECTIONS true",
		},
		"schema-per-sandbox": {"CREATE SCHEMA", "COMMENT ON SCHEMA", "CREATE TABLE items", "commit"},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			base := e.Baseline(t)
			proxy := pgtest.NewFaultProxy(t, "127.0.0.1:5432")
			i := 0
			for _, step := range steps[k.name] {
				for _, after := range []bool{false, true} {
					i++
					ce := subEnv(e, i)
					cut := strings.NewReplacer("{prefix}", `"`+ce.Prefix, "{name}", `"`+expectedName(ce, "pr-1")+`"`).Replace(step)
					t.Run(fmt.Sprintf("%s/after=%v", cut, after), func(t *testing.T) {
						var p reclaimCloser
						var err error
						if k.name == "database-per-sandbox" {
							p, err = provision.NewDatabasePerSandbox(proxy.DSN("postgres"), pgtest.ItemsMigration("v1", nil), provision.WithPrefix(ce.Prefix))
						} else {
							p, err = provision.NewSchemaPerSandbox(proxy.DSN(pgtest.SchemasDB()), pgtest.ItemsMigration("v1", nil), provision.WithPrefix(ce.Prefix))
						}
						if err != nil {
							t.Fatal(err)
						}
						r := pgtest.Router(t, base, p, dbroute.WithOpenTimeout(20*time.Second))
						proxy.Arm(cut, after)
						insert := func() error {
							_, err := r.Exec(pgtest.SandboxCtx("pr-1"), "INSERT INTO items (owner) VALUES ('pr-1')")
							return err
						}
						err = insert()
						if !proxy.HasFired() {
							t.Fatalf("the proxy never saw %q (err %v)", cut, err)
						}
						if !errors.Is(err, dbroute.ErrUnavailable) || errors.Is(err, dbroute.ErrNoTestDatabase) {
							t.Errorf("cut connection: err = %v, want ErrUnavailable only", err)
						}
						if err := insert(); err != nil {
							t.Fatalf("after the cut: %v", err)
						}
						checkProvisioned(t, ce, k, 1, "pr-1")
					})
				}
			}
		})
	}
}

// Environment of the helper process of TestProvisionSurvivesKill.
const (
	envChildDSN    = "DBROUTE_TEST_CHILD_DSN"
	envChildKind   = "DBROUTE_TEST_CHILD_KIND"
	envChildPrefix = "DBROUTE_TEST_CHILD_PREFIX"
	envChildID     = "DBROUTE_TEST_CHILD_ID"
	envChildStep   = "DBROUTE_TEST_CHILD_STEP"
)

// TestProvisionChild is not a test: it is the process that
// TestProvisionSurvivesKill starts and kills. It provisions a sandbox and
// stops for good after the step named in its environment.
func TestProvisionChild(t *testing.T) {
	dsn := os.Getenv(envChildDSN)
	if dsn == "" {
		return // not started as the helper process
	}
	step := os.Getenv(envChildStep)
	hook := provision.WithStepHook(func(s string) {
		if s == step {
			fmt.Println("STOPPED AT", s)
			select {} // wait for SIGKILL
		}
	})
	opts := []provision.ProvisionerOption{provision.WithPrefix(os.Getenv(envChildPrefix)), hook}
	var p dbroute.Provider
	var err error
	if os.Getenv(envChildKind) == "database-per-sandbox" {
		p, err = provision.NewDatabasePerSandbox(dsn, pgtest.ItemsMigration("v1", nil), opts...)
	} else {
		p, err = provision.NewSchemaPerSandbox(dsn, pgtest.ItemsMigration("v1", nil), opts...)
	}
	if err != nil {
		fmt.Println("ERROR", err)
		return
	}
	_, err = p.Open(context.Background(), os.Getenv(envChildID), "")
	fmt.Println("FINISHED", err)
}

// killAt runs the helper process for sandbox id under e.Prefix, waits until
// it reports step done, and kills it with SIGKILL.
func killAt(t *testing.T, e *pgtest.Env, k kind, id, step string) {
	t.Helper()
	dsn := e.URL
	if k.name == "schema-per-sandbox" {
		dsn = e.DSN(pgtest.SchemasDB())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProvisionChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChildDSN+"="+dsn, envChildKind+"="+k.name, envChildPrefix+"="+e.Prefix, envChildID+"="+id, envChildStep+"="+step)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	timeout := time.After(2 * time.Minute)
	for stopped := false; !stopped; {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("helper process ended without reaching step %s", step)
			}
			if strings.HasPrefix(l, "FINISHED") || strings.HasPrefix(l, "ERROR") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("helper process: %s (step %s never reached)", l, step)
			}
			stopped = l == "STOPPED AT "+step
		case <-timeout:
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper process did not reach step %s", step)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for range lines {
	}
}

// TestProvisionSurvivesKill kills a process with SIGKILL after each step of
// provisioning: the next request, from another provider, finishes the job.
func TestProvisionSurvivesKill(t *testing.T) {
	t.Parallel()
	steps := map[string][]string{
		"database-per-sandbox": {"template-created", "template-commented", "template-migrated", "template-marked", "created", "commented", "opened"},
		"schema-per-sandbox":   {"schema-created", "schema-commented", "schema-migrated"},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			base := e.Baseline(t)
			for i, step := range steps[k.name] {
				ce := subEnv(e, i)
				t.Run(step, func(t *testing.T) {
					killAt(t, ce, k, "pr-1", step)
					if step == "created" || step == "commented" {
						// Interrupted between CREATE and its end: listed as
						// ours, incomplete.
						p := k.newProvider(t, ce, pgtest.ItemsMigration("v1", nil))
						list, err := p.Provisioned(context.Background())
						p.Close()
						if err != nil || len(list) != 1 || !list[0].Incomplete || list[0].ID != "pr-1" {
							t.Errorf("after a kill at %s: Provisioned = %+v, %v; want pr-1, incomplete", step, list, err)
						}
					}
					r := pgtest.Router(t, base, k.newProvider(t, ce, pgtest.ItemsMigration("v1", nil)))
					if _, err := r.Exec(pgtest.SandboxCtx("pr-1"), "INSERT INTO items (owner) VALUES ('pr-1')"); err != nil {
						t.Fatalf("after a kill at %s: %v", step, err)
					}
					checkProvisioned(t, ce, k, 1, "pr-1")
				})
			}
		})
	}
}

// TestInterruptedCreationReclaimed: Destroy and Reap drop databases whose
// creation was killed half-way, including one whose name (hashed) does not
// tell its sandbox, and leave alone a foreign database that looks
// half-made but lacks the creation mark.
func TestInterruptedCreationReclaimed(t *testing.T) {
	t.Parallel()
	k := kinds[0]
	e := pgtest.Server(t)
	long := strings.Repeat("b", 60) + "-02"
	killAt(t, e, k, "pr-d", "created")
	killAt(t, e, k, long, "created")
	killAt(t, e, k, "pr-live", "commented")
	foreign := expectedName(e, "pr-foreign")
	e.Exec(t, "CREATE DATABASE "+pgx.Identifier{foreign}.Sanitize()+" ALLOW_CONNECTIONS false CONNECTION LIMIT 7")

	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-live"}, {ID: "pr-foreign"}})
	if err != nil {
		t.Fatal(err)
	}
	p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))
	r := e.Router(t, p, dbroute.WithRoutes(table))
	if err := p.Destroy(context.Background(), "pr-d"); err != nil {
		t.Fatalf("Destroy of an interrupted creation: %v", err)
	}
	if _, _, _, exists := e.DBState(t, expectedName(e, "pr-d")); exists {
		t.Error("Destroy left the interrupted database of pr-d")
	}
	dropped, err := p.Reap(context.Background(), table)
	if err != nil {
		t.Fatal(err)
	}
	// pr-live is in the table, but its half-made database is dropped all
	// the same: its next request makes a fresh one.
	if !slices.Equal(dropped, []string{"pr-live"}) {
		t.Errorf("Reap = %v, want [pr-live] (the hashed one has no known ID)", dropped)
	}
	got := e.Databases(t)
	want := []string{foreign, e.Prefix + "_template"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after Reap: databases %v, want %v", got, want)
	}
	if _, err := r.Exec(pgtest.SandboxCtx("pr-live"), "INSERT INTO items (owner) VALUES ('pr-live')"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(pgtest.SandboxCtx("pr-foreign"), "SELECT 1"); !errors.Is(err, dbroute.ErrNotOwned) {
		t.Errorf("foreign look-alike: err = %v, want ErrNotOwned", err)
	}
	if err := p.Destroy(context.Background(), "pr-foreign"); !errors.Is(err, dbroute.ErrNotOwned) {
		t.Errorf("Destroy of a foreign look-alike = %v, want ErrNotOwned", err)
	}
}
