package provision_test

import (
	"context"
	"hash/fnv"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
)

// Adversarial tests of the provisioners (task ap): what an outsider, an
// operator or a crash could make them do to databases that are not theirs
// or that are still in use.

// lockKeyOf is the provisioners' advisory lock key of a name (FNV-1a),
// written out independently of the package.
func lockKeyOf(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}

// callersIn counts the goroutines whose stacks hold a call of fn.
func callersIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
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
			before := callersIn(do)
			actx, cancel := context.WithCancel(ctx)
			defer cancel()
			errA := make(chan error, 1)
			go func() { _, err := p.Open(actx, "pr-1", ""); errA <- err }()
			for callersIn(do) < before+1 {
				runtime.Gosched()
			}
			errB := make(chan error, 1)
			go func() { _, err := p.Open(ctx, "pr-1", ""); errB <- err }()
			for callersIn(do) < before+2 {
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
