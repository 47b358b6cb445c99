package provision_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestIsolationProperty runs thousands of randomly interleaved baseline and
// sandbox operations (every query method, transactions committed and rolled
// back, batches, COPY, refused sandboxes) from concurrent goroutines, with
// fewer pool slots than sandboxes so pools are evicted and reopened under
// load (each worker uses the rarely used sandbox once halfway through, so
// at least one eviction and reopening is certain). Then it counts the rows
// of every database by owner: each database must hold exactly the rows its
// own owner committed, and nothing else.
func TestIsolationProperty(t *testing.T) {
	t.Parallel()
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			e := pgtest.Server(t)
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)

			hot := []string{"iso-a", "iso-b"}
			const rare = "iso-d" // used now and then: evicts a hot pool
			sbs := []routes.Sandbox{{ID: rare}}
			for _, id := range hot {
				sbs = append(sbs, routes.Sandbox{ID: id})
			}
			table, err := routes.NewStatic(sbs)
			if err != nil {
				t.Fatal(err)
			}
			p := &countingProvider{reclaimCloser: k.newProvider(t, e, pgtest.ItemsMigration("v1", nil))}
			// Pools opened, counted apart from provider opens: a reopened
			// pool must not provision again.
			var pools atomic.Int32
			r := e.Router(t, p, dbroute.WithRoutes(table), dbroute.WithMaxPools(2),
				dbroute.WithPoolTurn(20*time.Millisecond),
				dbroute.WithPoolConfig(func(_ string, cfg *pgxpool.Config) { pools.Add(1); cfg.MaxConns = 3 }))

			owners := append([]string{"baseline", rare}, hot...)
			committed := make(map[string]*atomic.Int64)
			for _, o := range owners {
				committed[o] = new(atomic.Int64)
			}
			var refused atomic.Int64

			const workers, opsPerWorker = 8, 300
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(seed, uint64(w)))
					for i := range opsPerWorker {
						var owner string
						var ctx context.Context
						switch x := rng.IntN(100); {
						case i == opsPerWorker/2 || x == 30 && rng.IntN(4) == 0:
							owner, ctx = rare, pgtest.SandboxCtx(rare)
						case x < 30:
							owner, ctx = "baseline", context.Background()
						case x < 35:
							// Not in the route table: refused, written nowhere.
							_, err := r.Exec(pgtest.SandboxCtx("iso-unknown"), "INSERT INTO items (owner) VALUES ('iso-unknown')")
							if !errors.Is(err, dbroute.ErrNoTestDatabase) {
								t.Errorf("worker %d op %d: unknown sandbox: %v", w, i, err)
							}
							refused.Add(1)
							continue
						default:
							owner = hot[rng.IntN(len(hot))]
							ctx = pgtest.SandboxCtx(owner)
						}
						op, n, err := randomOp(ctx, rng, r, owner)
						if err != nil {
							t.Errorf("worker %d op %d (%s as %s): %v", w, i, op, owner, err)
							return
						}
						committed[owner].Add(n)
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}

			// Count every database by owner.
			got := map[string]map[string]int64{}
			dsn, tbl := e.BaselineItems()
			got["baseline"] = ownersIn(t, dsn, tbl)
			for _, id := range append([]string{rare}, hot...) {
				dsn, tbl := k.where(e, expectedName(e, id))
				got[id] = ownersIn(t, dsn, tbl)
			}
			var total int64
			for _, o := range owners {
				want := map[string]int64{}
				if n := committed[o].Load(); n > 0 {
					want[o] = n
				}
				total += committed[o].Load()
				if !maps.Equal(got[o], want) {
					t.Errorf("%s database holds %v, want %v", o, got[o], want)
				}
			}
			// Each worker used all three sandboxes by halfway (the hot ones
			// in ~97 ops each before it), so the rare one's first opening
			// evicted a hot pool, which the next ~100 hot ops reopened.
			opens, built := p.opens.Load(), pools.Load()
			t.Logf("%d ops, %d rows committed, %d refused, %d pools opened, %d provisionings", workers*opsPerWorker, total, refused.Load(), built, opens)
			if reopened := int(built) - len(hot) - 1; reopened <= 0 {
				t.Errorf("%d pools opened for %d sandboxes with room for 2: no pool was evicted and reopened, so eviction under load went untested", built, len(hot)+1)
			}
			if int(opens) != len(hot)+1 {
				t.Errorf("provider opened %d times for %d sandboxes: reopening an evicted pool provisioned again", opens, len(hot)+1)
			}
			if objs := k.objects(t, e); slices.ContainsFunc(objs, func(n string) bool { return n == expectedName(e, "iso-unknown") }) {
				t.Error("a test database was made for a sandbox outside the route table")
			}
		})
	}
}

// randomOp runs one random operation as owner on r and returns its name
// and how many rows it committed.
func randomOp(ctx context.Context, rng *rand.Rand, r *dbroute.Router, owner string) (string, int64, error) {
	const insert = "INSERT INTO items (owner, n) VALUES ($1, $2)"
	switch rng.IntN(9) {
	case 0:
		_, err := r.Exec(ctx, insert, owner, 1)
		return "Exec", 1, err
	case 1:
		var id int64
		err := r.QueryRow(ctx, insert+" RETURNING id", owner, 1).Scan(&id)
		return "QueryRow", 1, err
	case 2:
		// Reads see only the owner's rows.
		var others int64
		err := r.QueryRow(ctx, "SELECT count(*) FROM items WHERE owner <> $1", owner).Scan(&others)
		if err == nil && others != 0 {
			err = fmt.Errorf("%d rows of other owners visible", others)
		}
		return "read", 0, err
	case 3, 4:
		commit := rng.IntN(3) > 0
		n := 1 + rng.IntN(3)
		tx, err := r.BeginTx(ctx, pgx.TxOptions{IsoLevel: []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.RepeatableRead}[rng.IntN(2)]})
		if err != nil {
			return "BeginTx", 0, err
		}
		for range n {
			if _, err := tx.Exec(ctx, insert, owner, 2); err != nil {
				tx.Rollback(ctx)
				return "tx", 0, err
			}
		}
		if !commit {
			return "tx rollback", 0, tx.Rollback(ctx)
		}
		return "tx commit", int64(n), tx.Commit(ctx)
	case 5:
		b := &pgx.Batch{}
		n := 1 + rng.IntN(4)
		for range n {
			b.Queue(insert, owner, 3)
		}
		br := r.SendBatch(ctx, b)
		var err error
		for range n {
			if _, e := br.Exec(); e != nil && err == nil {
				err = e
			}
		}
		return "SendBatch", int64(n), errors.Join(err, br.Close())
	case 6:
		n := 1 + rng.IntN(5)
		rows := make([][]any, n)
		for i := range rows {
			rows[i] = []any{owner, int32(4)}
		}
		c, err := r.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"owner", "n"}, pgx.CopyFromRows(rows))
		return "CopyFrom", c, err
	case 7:
		c, err := r.Acquire(ctx)
		if err != nil {
			return "Acquire", 0, err
		}
		defer c.Release()
		_, err = c.Exec(ctx, insert, owner, 5)
		return "Acquire", 1, err
	default:
		rows, err := r.Query(ctx, insert+" RETURNING id", owner, 6)
		if err != nil {
			return "Query", 0, err
		}
		rows.Close()
		return "Query", 1, rows.Err()
	}
}

// ownersIn counts the rows of table in the database dsn names, by owner.
func ownersIn(t *testing.T, dsn, table string) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, "SELECT owner, count(*) FROM "+table+" GROUP BY owner")
	out := map[string]int64{}
	var owner string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&owner, &n}, func() error {
		out[owner] = n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
