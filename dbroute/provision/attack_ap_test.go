package provision_test

import (
	"context"
	"errors"
	"hash/fnv"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Adversarial tests of the provisioners (task ap): what an outsider, an
// operator or a crash could make them do to databases that are not theirs
// or that are still in use.

// hasObject reports whether the object called name exists.
func hasObject(t *testing.T, k kind, e *pgtest.Env, name string) bool {
	t.Helper()
	return slices.Contains(k.objects(t, e), name)
}

// A route table whose source has been failing since before a sandbox was
// created does not know that sandbox: Reap must not judge the sandbox's
// database by it, however old the database is by the clock. (Failed before
// the fix: a database made 15 minutes ago for a sandbox the stale table
// never saw was dropped with a 10-minute grace.)
func TestAttackReapStaleTable(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			clk := clocktest.New()
			t0 := clk.Now()
			var failing atomic.Bool
			src := routes.SourceFunc(func(context.Context) ([]routes.Sandbox, error) {
				if failing.Load() {
					return nil, errors.New("source down")
				}
				return []routes.Sandbox{{ID: "old"}}, nil
			})
			p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil), provision.WithClock(clk.Now), provision.WithReapGrace(10*time.Minute))
			defer p.Close()
			ctx := context.Background()
			// "gone" was made long before the table's last good load,
			// which does not hold it: it is reapable.
			clk.Advance(-30 * time.Minute)
			if _, err := p.Open(ctx, "gone", ""); err != nil {
				t.Fatal(err)
			}
			clk.Advance(30 * time.Minute)
			table := routes.New(routes.WithClock(clk.Now))
			if err := table.Load(ctx, src); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Open(ctx, "old", ""); err != nil {
				t.Fatal(err)
			}
			// The source fails from now on. Five minutes later, another
			// process (whose table is fine) creates sandbox "new"'s
			// database.
			failing.Store(true)
			clk.Advance(5 * time.Minute)
			if _, err := p.Open(ctx, "new", ""); err != nil {
				t.Fatal(err)
			}
			clk.Advance(15 * time.Minute)
			if err := table.Load(ctx, src); err == nil {
				t.Fatal("the failing source loaded")
			}
			if !table.SyncedAt().Equal(t0) {
				t.Fatalf("SyncedAt = %v, want the first load %v", table.SyncedAt(), t0)
			}
			dropped, err := p.Reap(ctx, table)
			if err != nil || !slices.Equal(dropped, []string{"gone"}) {
				t.Errorf("Reap by a table stale for 20 minutes = %v, %v; want [gone]", dropped, err)
			}
			for _, id := range []string{"old", "new"} {
				if !hasObject(t, k, e, expectedName(e, id)) {
					t.Errorf("the database of %q, unknown to the stale table, was dropped", id)
				}
			}
		})
	}
}

// A sandbox's database that is dropped and made afresh (by another
// process) between Reap's listing and its drop is younger than the grace:
// Reap must look again under the lock rather than drop it by the age it
// listed. (Failed before the fix: the fresh database was dropped.)
func TestAttackReapRecreatedMeanwhile(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			clk := clocktest.New()
			ctx := context.Background()
			other := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil), provision.WithClock(clk.Now))
			defer other.Close()
			// When armed, the reaper's clock (read once Reap has listed)
			// lets the other process reset the sandbox: Destroy, then a
			// request that creates its database again.
			var armed atomic.Bool
			var hookErr error
			clock := func() time.Time {
				if armed.CompareAndSwap(true, false) {
					if err := other.Destroy(ctx, "pr-1"); err != nil {
						hookErr = err
					} else if _, err := other.Open(ctx, "pr-1", ""); err != nil {
						hookErr = err
					}
				}
				return clk.Now()
			}
			reaper := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil), provision.WithClock(clock), provision.WithReapGrace(10*time.Minute))
			defer reaper.Close()
			if _, err := reaper.Open(ctx, "pr-1", ""); err != nil {
				t.Fatal(err)
			}
			clk.Advance(30 * time.Minute)
			// The reaper's table lags: it does not hold pr-1.
			table, err := routes.NewStatic(nil, routes.WithClock(clk.Now))
			if err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			dropped, err := reaper.Reap(ctx, table)
			if hookErr != nil {
				t.Fatal(hookErr)
			}
			if armed.Load() {
				t.Fatal("Reap never read its clock")
			}
			if err != nil || len(dropped) != 0 {
				t.Errorf("Reap = %v, %v; want nothing dropped", dropped, err)
			}
			if !hasObject(t, k, e, expectedName(e, "pr-1")) {
				t.Error("Reap dropped the database made afresh after its listing, younger than the grace")
			}
		})
	}
}

// lockKeyOf is the provisioners' advisory lock key of a name (FNV-1a),
// written out independently of the package.
func lockKeyOf(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}

// callersIn counts the goroutines started by the calling one whose stacks
// hold a call of fn. Only those: other tests of the package run in
// parallel and call fn too (a count of every goroutine taken before and
// after could wait forever, once one of theirs that was counted left),
// and the stacks are read whole, however many goroutines there are.
func callersIn(fn string) int {
	buf := make([]byte, 1<<16)
	for {
		if n := runtime.Stack(buf, true); n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	// The first stack is the caller's: "goroutine N [running]:".
	self, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	mine := " in goroutine " + self + "\n"
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) && strings.Contains(g, mine) {
			n++
		}
	}
	return n
}

// Requests for one sandbox in one process share one creation; a caller
// that gives up (its context cancelled) must not fail the others, whose
// contexts are fine. (Failed before the fix: the second request got the
// first one's "context canceled", as ErrNoTestDatabase.)
func TestAttackSharedCreationCancelled(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			ctx := context.Background()
			p := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))
			defer p.Close()
			if _, err := p.Open(ctx, "warm", ""); err != nil { // builds the template
				t.Fatal(err)
			}
			// Hold the sandbox's lock, as a creation in another process
			// would.
			// (Advisory locks belong to a database: the one the
			// provisioner's admin connection names.)
			lockDB := e.URL
			if k.name == "schema-per-sandbox" {
				lockDB = e.DSN(pgtest.SchemasDB())
			}
			holder, err := pgx.Connect(ctx, lockDB)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close(ctx)
			key := lockKeyOf(expectedName(e, "pr-1"))
			if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", int32(0x5b0db000), key); err != nil {
				t.Fatal(err)
			}
			unlocked := false
			unlock := func() {
				if !unlocked {
					unlocked = true
					holder.Exec(ctx, "SELECT pg_advisory_unlock_all()")
				}
			}
			defer unlock()
			const do = "singleflight.(*Group).Do("
			actx, cancel := context.WithCancel(ctx)
			defer cancel()
			errA := make(chan error, 1)
			go func() { _, err := p.Open(actx, "pr-1", ""); errA <- err }()
			for callersIn(do) < 1 {
				runtime.Gosched()
			}
			errB := make(chan error, 1)
			go func() { _, err := p.Open(ctx, "pr-1", ""); errB <- err }()
			for callersIn(do) < 2 {
				runtime.Gosched()
			}
			cancel()
			if err := <-errA; err == nil {
				t.Fatal("the cancelled request succeeded while the lock was held")
			}
			unlock()
			if err := <-errB; err != nil {
				t.Errorf("a request whose context is fine failed with another's cancellation: %v", err)
			}
		})
	}
}

// Two processes creating the same sandboxes at once while a third reaps
// as hard as it can (no grace) by a table that holds them: every request
// succeeds, and each sandbox ends with one finished database; the reaper
// drops nothing live and no creation in progress.
func TestAttackReapRacesCreation(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			ctx := context.Background()
			ids := []string{"s0", "s1", "s2", "s3", "s4-" + strings.Repeat("x", 58)}
			var sbs []routes.Sandbox
			for _, id := range ids {
				sbs = append(sbs, routes.Sandbox{ID: id})
			}
			table, err := routes.NewStatic(sbs)
			if err != nil {
				t.Fatal(err)
			}
			a := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))
			defer a.Close()
			b := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))
			defer b.Close()
			reaper := k.newProvider(t, e, pgtest.ItemsMigration("v1", nil), provision.WithReapGrace(0))
			defer reaper.Close()
			stop := make(chan struct{})
			reaped := make(chan []string, 1)
			go func() {
				var all []string
				for {
					select {
					case <-stop:
						reaped <- all
						return
					default:
					}
					dropped, err := reaper.Reap(ctx, table)
					if err != nil {
						t.Errorf("Reap: %v", err)
					}
					all = append(all, dropped...)
				}
			}()
			errs := make(chan error, 2*len(ids))
			for _, p := range []reclaimCloser{a, b} {
				for _, id := range ids {
					go func() { _, err := p.Open(ctx, id, ""); errs <- err }()
				}
			}
			for range 2 * len(ids) {
				if err := <-errs; err != nil {
					t.Errorf("Open: %v", err)
				}
			}
			close(stop)
			if got := <-reaped; len(got) != 0 {
				t.Errorf("the reaper dropped %v, all live", got)
			}
			list, err := a.Provisioned(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range list {
				if o.Incomplete {
					t.Errorf("left incomplete: %+v", o)
				}
				got = append(got, o.ID)
			}
			if !slices.Equal(got, ids) {
				t.Errorf("Provisioned = %v, want %v", got, ids)
			}
		})
	}
}
