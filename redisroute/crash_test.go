package redisroute_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/redisroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestInterruptedClaimLeavesForeignDataAlone: the server goes away at
// every step of a claim in turn (a proxy stops forwarding from command k
// on) and comes back. A database holding somebody else's keys without a
// marker is never given to the sandbox, never marked as the sandbox's,
// and Destroy of the sandbox does not flush it.
func TestInterruptedClaimLeavesForeignDataAlone(t *testing.T) {
	server(t)
	ctx := context.Background()
	db := sandboxLast
	foreign := raw(t, db)
	if n := foreign.DBSize(ctx).Val(); n != 0 {
		t.Skipf("database %d is in use", db)
	}
	foreign.Set(ctx, "rrt:someone-elses", "v", 0)
	t.Cleanup(func() { foreign.Del(ctx, "rrt:someone-elses") })

	for k := int64(1); ; k++ {
		p := newProxy(t)
		c := redis.NewClient(&redis.Options{Addr: p.addr(), DB: baseDB, MaxRetries: 1})
		r, err := redisroute.New(c, redisroute.Databases{First: db, Last: db})
		if err != nil {
			t.Fatal(err)
		}
		id := newID()
		p.cutFrom.Store(k)
		first := c.Set(sandboxCtx(id), "k", "v", 0).Err()
		p.cutFrom.Store(0)
		again := c.Set(sandboxCtx(id), "k", "v", 0).Err()
		if !errors.Is(again, redisroute.ErrNoSandboxDatabase) {
			t.Errorf("cut at command %d (first try: %v): retry = %v, want ErrNoSandboxDatabase", k, first, again)
		}
		if owner := foreign.Get(ctx, redisroute.MarkerKey).Val(); owner != "" {
			t.Errorf("cut at command %d: the foreign database is marked as %q's", k, owner)
		}
		if err := r.Destroy(ctx, id); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		if v := foreign.Get(ctx, "rrt:someone-elses").Val(); v != "v" {
			t.Fatalf("cut at command %d: the foreign key is %q after Destroy, want it kept", k, v)
		}
		foreign.Del(ctx, redisroute.MarkerKey)
		r.Close()
		c.Close()
		if first != nil && !errors.Is(first, redisroute.ErrNoSandboxDatabase) {
			continue // the cut hit the claim: try the next step
		}
		if k == 1 {
			t.Fatal("no command was cut")
		}
		break // the claim ran to its end before command k
	}
}

// TestNeverLoadedTable: a route table that has never loaded knows no
// sandbox yet. Reap with it flushes nothing (every database would look
// abandoned), and a sandbox command is refused as not synced.
func TestNeverLoadedTable(t *testing.T) {
	id := newID()
	table := routes.New() // never loaded: SyncedAt is the zero time
	rec, logger := audittest.New()
	c, p, r := route(t, []string{id}, redisroute.WithRoutes(table), redisroute.WithLogger(logger))
	other, _, _ := route(t, []string{id})
	sctx := sandboxCtx(id)
	if err := other.Set(sctx, p+"k", "v", 0).Err(); err != nil { // a live sandbox's data
		t.Fatal(err)
	}
	gone, err := r.Reap(context.Background())
	if !errors.Is(err, redisroute.ErrNotSynced) || len(gone) != 0 {
		t.Errorf("Reap on a never-loaded table: %v, %v; want ErrNotSynced, nothing", gone, err)
	}
	if v := other.Get(sctx, p+"k").Val(); v != "v" {
		t.Errorf("a live sandbox's key is %q after Reap, want kept", v)
	}
	err = c.Set(sctx, p+"k2", "v", 0).Err()
	if !errors.Is(err, redisroute.ErrNoSandboxDatabase) || !errors.Is(err, redisroute.ErrNotSynced) {
		t.Errorf("sandbox command on a never-loaded table: %v, want ErrNoSandboxDatabase and ErrNotSynced", err)
	}
	if count(rec.Records(), func(m map[string]string) bool {
		return m[audit.KeyDecision] == string(audit.Rejected) && strings.Contains(m[audit.KeyReason], audit.ReasonNotSynced)
	}) == 0 {
		t.Error("no rejected record with the not-synced reason")
	}
}

// TestConnectionsCutMidRun: every connection to the server drops (a
// restart, as a proxy cutting them shows it) while a sandbox and
// production are in use. The clients reconnect, and each command lands
// in its own database again: the sandbox's new connections select its
// database, production's the baseline's.
func TestConnectionsCutMidRun(t *testing.T) {
	server(t)
	p := newProxy(t)
	c := redis.NewClient(&redis.Options{Addr: p.addr(), DB: baseDB})
	defer c.Close()
	r, err := redisroute.New(c, dbs)
	if err != nil {
		t.Fatal(err)
	}
	id := newID()
	defer r.Close()
	defer r.Destroy(context.Background(), id)
	ctx, sctx := context.Background(), sandboxCtx(id)
	key := "rrt:" + t.Name() + ":k"
	defer raw(t, baseDB).Del(ctx, key)
	for round := range 3 {
		if err := c.Set(sctx, key, "sandbox", 0).Err(); err != nil {
			t.Fatalf("round %d: sandbox SET: %v", round, err)
		}
		if err := c.Set(ctx, key, "prod", 0).Err(); err != nil {
			t.Fatalf("round %d: production SET: %v", round, err)
		}
		p.cutAll()
		// The first command after the cut may fail on a dead pooled
		// connection; go-redis retries it on a new one.
		if v, err := c.Get(sctx, key).Result(); err != nil || v != "sandbox" {
			t.Errorf("round %d: sandbox GET after the cut: %q, %v", round, v, err)
		}
		if v, err := c.Get(ctx, key).Result(); err != nil || v != "prod" {
			t.Errorf("round %d: production GET after the cut: %q, %v", round, v, err)
		}
	}
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := raw(t, db).Get(ctx, key).Val(); v != "sandbox" {
		t.Errorf("sandbox database holds %q", v)
	}
	if v := raw(t, baseDB).Get(ctx, key).Val(); v != "prod" {
		t.Errorf("baseline database holds %q", v)
	}
	if n := raw(t, 0).Exists(ctx, key).Val(); n != 0 && baseDB != 0 {
		t.Error("a key reached database 0")
	}
}

// TestInterruptedClaimOfAFreeDatabase: the server goes away at every step
// of a claim of an empty database in turn. Whether or not the claim's
// script ran before the cut (its reply may be lost), the sandbox's next
// command finds or claims the database, exactly one database of the range
// is marked as the sandbox's, and its writes land there, not in production.
func TestInterruptedClaimOfAFreeDatabase(t *testing.T) {
	server(t)
	ctx := context.Background()
	db := sandboxLast
	free := raw(t, db)
	if n := free.DBSize(ctx).Val(); n != 0 {
		t.Skipf("database %d is in use", db)
	}
	for k := int64(1); ; k++ {
		p := newProxy(t)
		c := redis.NewClient(&redis.Options{Addr: p.addr(), DB: baseDB, MaxRetries: 1})
		r, err := redisroute.New(c, redisroute.Databases{First: db, Last: db})
		if err != nil {
			t.Fatal(err)
		}
		id := newID()
		key := "rrt:" + t.Name() + ":k"
		p.cutFrom.Store(k)
		first := c.Set(sandboxCtx(id), key, "v", 0).Err()
		p.cutFrom.Store(0)
		if err := c.Set(sandboxCtx(id), key, "v", 0).Err(); err != nil {
			t.Errorf("cut at command %d (first try: %v): retry = %v", k, first, err)
		}
		if owner := free.Get(ctx, redisroute.MarkerKey).Val(); owner != id {
			t.Errorf("cut at command %d: database %d is marked %q, want %q", k, db, owner, id)
		}
		if free.Get(ctx, key).Val() != "v" || raw(t, baseDB).Exists(ctx, key).Val() != 0 {
			t.Errorf("cut at command %d: the sandbox's write is not (only) in its database", k)
		}
		if err := r.Destroy(ctx, id); err != nil {
			t.Errorf("Destroy: %v", err)
		}
		if n := free.DBSize(ctx).Val(); n != 0 {
			t.Fatalf("cut at command %d: database %d holds %d keys after Destroy", k, db, n)
		}
		r.Close()
		c.Close()
		if first != nil {
			continue // the cut hit the claim or the command: try the next step
		}
		if k == 1 {
			t.Fatal("no command was cut")
		}
		break
	}
}
