package dbroute_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// offline is a pool that never connects: routing decisions alone.
func offline(t testing.TB) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/baseline")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestRouterQuerySurface(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	base := e.Baseline(t)
	provider, err := dbroute.Static(map[string]string{"pr-a": e.Target(t, "a")})
	if err != nil {
		t.Fatal(err)
	}
	r := pgtest.Router(t, base, provider)

	for name, call := range calls(r, "baseline") {
		if err := call(context.Background()); err != nil {
			t.Errorf("baseline %s: %v", name, err)
		}
	}
	for name, call := range calls(r, "pr-a") {
		if err := call(pgtest.SandboxCtx("pr-a")); err != nil {
			t.Errorf("sandbox %s: %v", name, err)
		}
	}
	for name, call := range calls(r, "pr-unknown") {
		if err := call(pgtest.SandboxCtx("pr-unknown")); !errors.Is(err, dbroute.ErrNoTestDatabase) {
			t.Errorf("unknown sandbox %s: err = %v, want ErrNoTestDatabase", name, err)
		}
	}
	dsn, table := e.BaselineItems()
	if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = 'baseline'"); n != writers {
		t.Errorf("baseline: %d own rows, want %d", n, writers)
	}
	if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner <> 'baseline'"); n != 0 {
		t.Errorf("baseline: %d sandbox rows", n)
	}
	dsn, table = e.TargetItems("a")
	if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner = 'pr-a'"); n != writers {
		t.Errorf("test database: %d own rows, want %d", n, writers)
	}
	if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+table+" WHERE owner <> 'pr-a'"); n != 0 {
		t.Errorf("test database: %d foreign rows", n)
	}

	if p, err := r.Pool(context.Background()); err != nil || p != base {
		t.Errorf("Pool(no sandbox) = %p, %v; want the baseline %p", p, err, base)
	}
	if p, err := r.Pool(pgtest.SandboxCtx("pr-a")); err != nil || p == base {
		t.Errorf("Pool(pr-a) = %p, %v; want a test database pool", p, err)
	}
	if p, err := r.Pool(pgtest.SandboxCtx("pr-unknown")); !errors.Is(err, dbroute.ErrNoTestDatabase) || p != nil {
		t.Errorf("Pool(unknown) = %p, %v", p, err)
	}
}

func TestRouterRefusesBaselineAsTestDatabase(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	base := e.Baseline(t)
	provider, err := dbroute.Static(map[string]string{"evil": e.DSN(pgtest.BaselineDB())})
	if err != nil {
		t.Fatal(err)
	}
	r := pgtest.Router(t, base, provider)
	_, err = r.Exec(pgtest.SandboxCtx("evil"), "INSERT INTO items (owner) VALUES ('evil')")
	if !errors.Is(err, dbroute.ErrNoTestDatabase) || !strings.Contains(err.Error(), "is the baseline database") {
		t.Fatalf("err = %v, want ErrNoTestDatabase naming the baseline", err)
	}
	if len(r.OpenPools()) != 0 {
		t.Errorf("open pools: %v", r.OpenPools())
	}
}

func TestRouterFromTable(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	clk := clocktest.New()
	one, two := e.Target(t, "one"), e.Target(t, "two")
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-a", Database: one, Expires: clk.Now().Add(time.Hour)},
		{ID: "no-db"},
	}, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	r := pgtest.Router(t, e.Baseline(t), dbroute.FromTable(table))
	insert := func() error {
		_, err := r.Exec(pgtest.SandboxCtx("pr-a"), "INSERT INTO items (owner) VALUES ('pr-a')")
		return err
	}
	if err := insert(); err != nil {
		t.Fatal(err)
	}
	// The entry moves to another database: the pool follows.
	if err := table.Update([]routes.Sandbox{{ID: "pr-a", Database: two, Expires: clk.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := insert(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"one", "two"} {
		dsn, tbl := e.TargetItems(name)
		if n := pgtest.Count(t, dsn, "SELECT count(*) FROM "+tbl); n != 1 {
			t.Errorf("%s: %d rows, want 1", name, n)
		}
	}
	if got := r.OpenPools(); !slices.Equal(got, []string{"pr-a"}) {
		t.Errorf("open pools = %v", got)
	}
	for _, c := range []struct {
		id   string
		when func()
	}{
		{"no-db", func() {}},
		{"pr-unknown", func() {}},
		{"pr-a", func() { clk.Advance(time.Hour) }}, // expired
	} {
		c.when()
		if _, err := r.Exec(pgtest.SandboxCtx(c.id), "SELECT 1"); !errors.Is(err, dbroute.ErrNoTestDatabase) {
			t.Errorf("%s: err = %v, want ErrNoTestDatabase", c.id, err)
		}
	}
	if dsn, tbl := e.BaselineItems(); pgtest.Count(t, dsn, "SELECT count(*) FROM "+tbl) != 0 {
		t.Error("rows reached the baseline")
	}
}

func TestRouterLifecycle(t *testing.T) {
	t.Parallel()
	e := pgtest.Server(t)
	clk := clocktest.New()
	dsn := e.Target(t, "shared")
	provider, err := dbroute.Static(map[string]string{"a": dsn, "b": dsn, "c": dsn})
	if err != nil {
		t.Fatal(err)
	}
	r := pgtest.Router(t, e.Baseline(t), provider, dbroute.WithMaxPools(2), dbroute.WithIdleTimeout(time.Minute), dbroute.WithClock(clk.Now))
	use := func(id string) *pgxpool.Pool {
		t.Helper()
		if err := r.Ping(pgtest.SandboxCtx(id)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		p, err := r.Pool(pgtest.SandboxCtx(id))
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		return p
	}
	closed := func(p *pgxpool.Pool) bool {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if err := p.Ping(context.Background()); err != nil && strings.Contains(err.Error(), "closed pool") {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}

	a := use("a")
	b := use("b")
	use("a") // a is now more recent than b
	c := use("c")
	if got := r.OpenPools(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("least recently used: open pools = %v, want [a c]", got)
	}
	if !closed(b) {
		t.Error("the evicted pool of b was not closed")
	}
	if err := a.Ping(context.Background()); err != nil {
		t.Errorf("a's pool: %v", err)
	}

	// Idle: a was last used at 2s, c at 3s; it is 4s now.
	clk.Advance(58*time.Second + 500*time.Millisecond) // a idle 60.5s, c 59.5s
	r.CloseIdle()
	if got := r.OpenPools(); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("idle: open pools = %v, want [c]", got)
	}
	if !closed(a) {
		t.Error("the idle pool of a was not closed")
	}

	// A pool in use when it is retired stays usable until released.
	ctx := pgtest.SandboxCtx("c")
	tx, err := r.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	r.CloseIdle()
	if got := r.OpenPools(); len(got) != 0 {
		t.Fatalf("open pools = %v, want none", got)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO items (owner) VALUES ('c')"); err != nil {
		t.Fatalf("transaction on a retired pool: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !closed(c) {
		t.Error("the retired pool of c was not closed after its transaction ended")
	}

	// The next request opens a fresh pool.
	if p := use("a"); p == a {
		t.Error("a's closed pool was reused")
	}
	if got := r.OpenPools(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("open pools = %v, want [a]", got)
	}
}

func TestRouterAllocations(t *testing.T) {
	provider, err := dbroute.Static(map[string]string{"pr-1": "postgres://nobody@127.0.0.1:1/test"})
	if err != nil {
		t.Fatal(err)
	}
	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-1"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := dbroute.New(offline(t), provider, dbroute.WithRoutes(table))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	baseline, sandbox := context.Background(), pgtest.SandboxCtx("pr-1")
	if _, err := r.Pool(sandbox); err != nil { // warm
		t.Fatal(err)
	}
	for name, ctx := range map[string]context.Context{"baseline": baseline, "warm sandbox": sandbox} {
		if n := testing.AllocsPerRun(1000, func() {
			if _, err := r.Pool(ctx); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("Pool(%s): %v allocations, want 0", name, n)
		}
	}
}

func TestRouterAudit(t *testing.T) {
	rec, logger := audittest.New()
	provider, err := dbroute.Static(map[string]string{"pr-1": "postgres://tester:s3cret@127.0.0.1:1/testdb"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := dbroute.New(offline(t), provider, dbroute.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Pool(context.Background())
	r.Pool(pgtest.SandboxCtx("pr-1"))
	r.Pool(pgtest.SandboxCtx("pr-1")) // warm: no record
	r.Pool(pgtest.SandboxCtx("pr-2"))

	recs := rec.Records()
	out := fmt.Sprint(recs)
	if strings.Contains(out, "s3cret") {
		t.Errorf("audit record leaks the password: %s", out)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2:\n%s", len(recs), out)
	}
	for i, want := range []map[string]string{
		{audit.KeyDecision: string(audit.Routed), audit.KeyID: "pr-1", audit.KeyActor: "alice", audit.KeyProtocol: audit.SQL, audit.KeyTarget: "127.0.0.1:1/testdb", "level": "INFO"},
		{audit.KeyDecision: string(audit.Rejected), audit.KeyID: "pr-2", audit.KeyProtocol: audit.SQL, "level": "WARN"},
	} {
		for k, v := range want {
			if recs[i][k] != v {
				t.Errorf("record %d: %s = %v, want %q", i, k, recs[i][k], v)
			}
		}
	}
	if reason := recs[1][audit.KeyReason]; !strings.Contains(reason, "no test database") {
		t.Errorf("rejected record reason = %v", recs[1][audit.KeyReason])
	}
}

func TestRouterClose(t *testing.T) {
	provider, err := dbroute.Static(map[string]string{"pr-1": "postgres://nobody@127.0.0.1:1/test"})
	if err != nil {
		t.Fatal(err)
	}
	base := offline(t)
	r, err := dbroute.New(base, provider)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Pool(pgtest.SandboxCtx("pr-1")); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close() // idempotent
	if _, err := r.Pool(pgtest.SandboxCtx("pr-1")); !errors.Is(err, dbroute.ErrClosed) {
		t.Errorf("after Close: err = %v, want ErrClosed", err)
	}
	if p, err := r.Pool(context.Background()); p != base || err != nil {
		t.Errorf("baseline after Close = %p, %v", p, err)
	}
}

// slowProvider is a provider whose Open waits for release: it stands for a
// slow CREATE DATABASE.
type slowProvider struct {
	release chan struct{}
	opens   atomic.Int32
}

func (p *slowProvider) Lookup(string) (string, error) { return "k", nil }

func (p *slowProvider) Open(ctx context.Context, id, _ string) (*pgxpool.Config, error) {
	p.opens.Add(1)
	select {
	case <-p.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return pgxpool.ParseConfig("postgres://nobody@127.0.0.1:1/" + id)
}

func TestRouterWaitersGiveUpAlone(t *testing.T) {
	p := &slowProvider{release: make(chan struct{})}
	r, err := dbroute.New(offline(t), p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(pgtest.SandboxCtx("pr-1"), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Pool(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the waiter's deadline", err)
	}
	done := make(chan error)
	go func() {
		_, err := r.Pool(pgtest.SandboxCtx("pr-1"))
		done <- err
	}()
	close(p.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := p.opens.Load(); n != 1 {
		t.Errorf("Open called %d times: the first waiter's give-up cancelled the shared open", n)
	}
}

// TestNewValidation: every misconfiguration is an error from the
// constructor, wrapping ErrConfig; nil options are skipped.
func TestNewValidation(t *testing.T) {
	base := offline(t)
	provider, _ := dbroute.Static(nil)
	for name, c := range map[string]struct {
		base     *pgxpool.Pool
		provider dbroute.Provider
		opts     []dbroute.RouterOption
	}{
		"nil baseline":       {nil, provider, nil},
		"nil provider":       {base, nil, nil},
		"zero max pools":     {base, provider, []dbroute.RouterOption{dbroute.WithMaxPools(0)}},
		"negative idle":      {base, provider, []dbroute.RouterOption{dbroute.WithIdleTimeout(-1)}},
		"zero open budget":   {base, provider, []dbroute.RouterOption{dbroute.WithOpenTimeout(0)}},
		"negative pool turn": {base, provider, []dbroute.RouterOption{dbroute.WithPoolTurn(-1)}},
		"nil clock":          {base, provider, []dbroute.RouterOption{dbroute.WithClock(nil)}},
		"nil route table":    {base, provider, []dbroute.RouterOption{dbroute.WithRoutes(nil)}},
		"FromTable(nil)":     {base, dbroute.FromTable(nil), nil},
	} {
		if r, err := dbroute.New(c.base, c.provider, c.opts...); err == nil || r != nil || !errors.Is(err, dbroute.ErrConfig) {
			t.Errorf("%s: New = %v, %v; want an error wrapping ErrConfig", name, r, err)
		}
	}
	for _, dsns := range []map[string]string{
		{"Bad_ID": "postgres://127.0.0.1/x"},
		{"ok": "postgres://127.0.0.1:notaport/x"},
	} {
		if _, err := dbroute.Static(dsns); !errors.Is(err, dbroute.ErrConfig) {
			t.Errorf("Static(%v) = %v, want an error wrapping ErrConfig", dsns, err)
		}
	}
	r, err := dbroute.New(base, provider, nil, dbroute.WithMaxPools(1), nil)
	if err != nil {
		t.Fatalf("New with nil options: %v", err)
	}
	r.Close()
	cfg, err := pgxpool.ParseConfig("postgres://nobody@127.0.0.1:1/baseline")
	if err != nil {
		t.Fatal(err)
	}
	dbroute.Guard(cfg, nil)
	dbroute.GuardConn(cfg.ConnConfig, nil, dbroute.WithLogger(nil))
	if cfg.PrepareConn == nil || cfg.ConnConfig.Tracer == nil {
		t.Error("Guard with a nil option installed no guard")
	}
}
