package dbroute_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

// faultProxy is a TCP proxy on loopback in front of the PostgreSQL server
// that can cut a connection at a chosen statement: it reads the frontend
// protocol (startup message, then typed messages) and, when a simple
// query ('Q') contains the armed text, closes the client's side of the
// connection either before forwarding it (the server never runs it) or
// after (the server runs it; the client never hears back).
type faultProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   string
	after bool
	fired bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.handle(c) })
		}
	})
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// dsn is a connection string for database db through the proxy.
func (p *faultProxy) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", p.ln.Addr(), db)
}

// arm makes the proxy cut the next connection that sends a simple query
// containing text.
func (p *faultProxy) arm(text string, after bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut, p.after, p.fired = text, after, false
}

func (p *faultProxy) hasFired() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fired
}

func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *faultProxy) handle(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	p.track(client)
	p.track(server)
	defer func() {
		p.mu.Lock()
		delete(p.conns, client)
		delete(p.conns, server)
		p.mu.Unlock()
	}()
	var back sync.WaitGroup
	back.Go(func() {
		io.Copy(client, server)
		client.Close()
	})
	defer back.Wait()
	in := bufio.NewReader(client)
	// The startup message has no type byte.
	var n [4]byte
	if _, err := io.ReadFull(in, n[:]); err != nil {
		return
	}
	startup := make([]byte, binary.BigEndian.Uint32(n[:]))
	copy(startup, n[:])
	if _, err := io.ReadFull(in, startup[4:]); err != nil {
		return
	}
	if _, err := server.Write(startup); err != nil {
		return
	}
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			server.Close()
			return
		}
		msg := make([]byte, 1+binary.BigEndian.Uint32(hdr[1:]))
		copy(msg, hdr[:])
		if _, err := io.ReadFull(in, msg[5:]); err != nil {
			server.Close()
			return
		}
		if hdr[0] == 'Q' {
			p.mu.Lock()
			hit := p.cut != "" && bytes.Contains(msg[5:], []byte(p.cut))
			after := p.after
			if hit {
				p.cut, p.fired = "", true
			}
			p.mu.Unlock()
			if hit {
				if after {
					server.Write(msg)
					// The client goes first; the copier back to it stops
					// at the server's first answer, which PostgreSQL
					// sends once the statement is over. If that answer
					// was already copied before the client closed, the
					// copier waits for more that never comes: give the
					// statement a moment, then close the server side
					// anyway (PostgreSQL still reads and runs what was
					// written before the close), or the session would
					// hold its locks and block the next attempt.
					client.Close()
					copied := make(chan struct{})
					go func() { back.Wait(); close(copied) }()
					select {
					case <-copied:
					case <-time.After(2 * time.Second):
					}
				}
				server.Close()
				client.Close()
				return
			}
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}

// dbState is what pg_database says about a database.
func (e *env) dbState(t testing.TB, name string) (comment string, allow bool, limit int32, exists bool) {
	t.Helper()
	err := e.admin.QueryRow(context.Background(), `SELECT coalesce(shobj_description(oid, 'pg_database'), ''), datallowconn, datconnlimit FROM pg_database WHERE datname = $1`, name).Scan(&comment, &allow, &limit)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return comment, allow, limit, true
}

// checkProvisioned checks that the objects under prefix are exactly the
// finished ones of ids (and, for databases, the finished template), and
// that each holds rows rows of its own.
func checkProvisioned(t *testing.T, e *env, k kind, rows int, ids ...string) {
	t.Helper()
	var want []string
	for _, id := range ids {
		want = append(want, expectedName(e, id))
	}
	if k.name == "database-per-sandbox" {
		tmpl := e.prefix + "_template"
		want = append(want, tmpl)
		if c, _, _, _ := e.dbState(t, tmpl); !strings.HasPrefix(c, "sandboxkit/dbroute template version=") {
			t.Errorf("template comment %q: not finished", c)
		}
		for _, id := range ids {
			c, allow, limit, _ := e.dbState(t, expectedName(e, id))
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
		if n := count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = $1", id); n != rows {
			t.Errorf("%s: %d rows, want %d", id, n, rows)
		}
	}
}

// subEnv gives each case of a test a prefix of its own (a template of its
// own), under the test's tag so that cleanup finds it.
func subEnv(e *env, i int) *env {
	c := *e
	c.prefix = fmt.Sprintf("%sc%d_", e.prefix, i)
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
			e := server(t)
			base := e.baseline(t)
			proxy := newFaultProxy(t, "127.0.0.1:5432")
			i := 0
			for _, step := range steps[k.name] {
				for _, after := range []bool{false, true} {
					i++
					ce := subEnv(e, i)
					cut := strings.NewReplacer("{prefix}", `"`+ce.prefix, "{name}", `"`+expectedName(ce, "pr-1")+`"`).Replace(step)
					t.Run(fmt.Sprintf("%s/after=%v", cut, after), func(t *testing.T) {
						var p reclaimCloser
						var err error
						if k.name == "database-per-sandbox" {
							p, err = dbroute.NewDatabasePerSandbox(proxy.dsn("postgres"), itemsMigration("v1", nil), dbroute.WithPrefix(ce.prefix))
						} else {
							p, err = dbroute.NewSchemaPerSandbox(proxy.dsn(shared.schemas), itemsMigration("v1", nil), dbroute.WithPrefix(ce.prefix))
						}
						if err != nil {
							t.Fatal(err)
						}
						r := routerOn(t, base, p, dbroute.WithOpenTimeout(20*time.Second))
						proxy.arm(cut, after)
						insert := func() error {
							_, err := r.Exec(sandboxCtx("pr-1"), "INSERT INTO items (owner) VALUES ('pr-1')")
							return err
						}
						err = insert()
						if !proxy.hasFired() {
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
	hook := dbroute.WithStepHook(func(s string) {
		if s == step {
			fmt.Println("STOPPED AT", s)
			select {} // wait for SIGKILL
		}
	})
	opts := []dbroute.Option{dbroute.WithPrefix(os.Getenv(envChildPrefix)), hook}
	var p dbroute.Provider
	var err error
	if os.Getenv(envChildKind) == "database-per-sandbox" {
		p, err = dbroute.NewDatabasePerSandbox(dsn, itemsMigration("v1", nil), opts...)
	} else {
		p, err = dbroute.NewSchemaPerSandbox(dsn, itemsMigration("v1", nil), opts...)
	}
	if err != nil {
		fmt.Println("ERROR", err)
		return
	}
	_, err = p.Open(context.Background(), os.Getenv(envChildID), "")
	fmt.Println("FINISHED", err)
}

// killAt runs the helper process for sandbox id under e.prefix, waits until
// it reports step done, and kills it with SIGKILL.
func killAt(t *testing.T, e *env, k kind, id, step string) {
	t.Helper()
	dsn := e.url
	if k.name == "schema-per-sandbox" {
		dsn = e.dsn(shared.schemas)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProvisionChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChildDSN+"="+dsn, envChildKind+"="+k.name, envChildPrefix+"="+e.prefix, envChildID+"="+id, envChildStep+"="+step)
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
			e := server(t)
			base := e.baseline(t)
			for i, step := range steps[k.name] {
				ce := subEnv(e, i)
				t.Run(step, func(t *testing.T) {
					killAt(t, ce, k, "pr-1", step)
					if step == "created" || step == "commented" {
						// Interrupted between CREATE and its end: listed as
						// ours, incomplete.
						p := k.newProvider(t, ce, itemsMigration("v1", nil))
						list, err := p.Provisioned(context.Background())
						p.Close()
						if err != nil || len(list) != 1 || !list[0].Incomplete || list[0].ID != "pr-1" {
							t.Errorf("after a kill at %s: Provisioned = %+v, %v; want pr-1, incomplete", step, list, err)
						}
					}
					r := routerOn(t, base, k.newProvider(t, ce, itemsMigration("v1", nil)))
					if _, err := r.Exec(sandboxCtx("pr-1"), "INSERT INTO items (owner) VALUES ('pr-1')"); err != nil {
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
	e := server(t)
	long := strings.Repeat("b", 60) + "-02"
	killAt(t, e, k, "pr-d", "created")
	killAt(t, e, k, long, "created")
	killAt(t, e, k, "pr-live", "commented")
	foreign := expectedName(e, "pr-foreign")
	e.exec(t, "CREATE DATABASE "+pgx.Identifier{foreign}.Sanitize()+" ALLOW_CONNECTIONS false CONNECTION LIMIT 7")

	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-live"}, {ID: "pr-foreign"}})
	if err != nil {
		t.Fatal(err)
	}
	p := k.newProvider(t, e, itemsMigration("v1", nil))
	r := newRouter(t, e, p, dbroute.WithTable(table))
	if err := r.Destroy(context.Background(), "pr-d"); err != nil {
		t.Fatalf("Destroy of an interrupted creation: %v", err)
	}
	if _, _, _, exists := e.dbState(t, expectedName(e, "pr-d")); exists {
		t.Error("Destroy left the interrupted database of pr-d")
	}
	dropped, err := r.Reap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// pr-live is in the table, but its half-made database is dropped all
	// the same: its next request makes a fresh one.
	if !slices.Equal(dropped, []string{"pr-live"}) {
		t.Errorf("Reap = %v, want [pr-live] (the hashed one has no known ID)", dropped)
	}
	got := e.databases(t)
	want := []string{foreign, e.prefix + "_template"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after Reap: databases %v, want %v", got, want)
	}
	if _, err := r.Exec(sandboxCtx("pr-live"), "INSERT INTO items (owner) VALUES ('pr-live')"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(sandboxCtx("pr-foreign"), "SELECT 1"); !errors.Is(err, dbroute.ErrNotOwned) {
		t.Errorf("foreign look-alike: err = %v, want ErrNotOwned", err)
	}
	if err := r.Destroy(context.Background(), "pr-foreign"); !errors.Is(err, dbroute.ErrNotOwned) {
		t.Errorf("Destroy of a foreign look-alike = %v, want ErrNotOwned", err)
	}
}
