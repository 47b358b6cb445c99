package sqlroute_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
)

// isolationOps is how many operations the property test runs per server.
const isolationOps = 10_000

// A random interleaving of production and sandbox operations, over every
// method of the router, from concurrent workers: every read sees only the
// rows of its own side (0 cross-reads), and every database ends holding
// exactly the rows its side wrote (0 cross-writes).
func TestIsolationProperty(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 operations on the real servers")
	}
	worlds(t, func(t *testing.T, mk func(testing.TB, ...sqlroute.GuardOption) *world) {
		w := mk(t)
		r := w.router(t)
		sides := append([]string{""}, sandboxes...)
		const workers = 4
		var (
			mu      sync.Mutex
			written = map[string]int{}
			cross   int
		)
		ins := w.q("INSERT INTO items (owner, n) VALUES (?, ?)")
		sel := "SELECT owner FROM items"
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for wk := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(wk), 42))
				for range isolationOps / workers {
					side := sides[rng.IntN(len(sides))]
					ctx := context.Background()
					if side != "" {
						ctx = sandboxCtx(side)
					}
					owner := "own-" + side
					wrote, foreign, err := op(ctx, r, rng.IntN(6), ins, sel, owner)
					if err != nil {
						errs <- fmt.Errorf("side %q: %w", side, err)
						return
					}
					mu.Lock()
					written[side] += wrote
					cross += foreign
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if cross != 0 {
			t.Errorf("%d cross-reads: rows of another side seen", cross)
		}
		total := 0
		for _, side := range sides {
			own, all := w.count(t, side, "own-"+side), w.total(t, side)
			if own != written[side] || all != own {
				t.Errorf("database of %q: %d rows, %d of its own, want %d of its own only (cross-writes: %d)", side, all, own, written[side], all-own)
			}
			total += written[side]
		}
		t.Logf("%d operations, %d rows written, 0 cross-reads, 0 cross-writes", isolationOps, total)
	})
}

// op runs one operation of kind k with ctx: it reports the rows it wrote
// and the rows of another owner it read.
func op(ctx context.Context, r *sqlroute.Router, k int, ins, sel, owner string) (wrote, foreign int, err error) {
	scan := func(rows *sql.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var o string
			if err := rows.Scan(&o); err != nil {
				return err
			}
			if o != owner {
				foreign++
			}
		}
		return rows.Err()
	}
	switch k {
	case 0: // ExecContext
		_, err = r.ExecContext(ctx, ins, owner, k)
		return 1, 0, err
	case 1: // QueryContext
		rows, err := r.QueryContext(ctx, sel+" LIMIT 50")
		if err != nil {
			return 0, 0, err
		}
		return 0, foreign, scan(rows)
	case 2: // QueryRowContext
		var o string
		err := r.QueryRowContext(ctx, sel+" LIMIT 1").Scan(&o)
		if err == sql.ErrNoRows {
			return 0, 0, nil
		}
		if err == nil && o != owner {
			foreign++
		}
		return 0, foreign, err
	case 3: // BeginTx: write and read back, commit
		tx, err := r.BeginTx(ctx, nil)
		if err != nil {
			return 0, 0, err
		}
		if _, err := tx.ExecContext(ctx, ins, owner, k); err != nil {
			tx.Rollback()
			return 0, 0, err
		}
		rows, err := tx.QueryContext(ctx, sel+" LIMIT 50")
		if err != nil {
			tx.Rollback()
			return 0, 0, err
		}
		if err := scan(rows); err != nil {
			tx.Rollback()
			return 0, 0, err
		}
		return 1, foreign, tx.Commit()
	case 4: // BeginTx rolled back: writes nothing
		tx, err := r.BeginTx(ctx, nil)
		if err != nil {
			return 0, 0, err
		}
		if _, err := tx.ExecContext(ctx, ins, owner, k); err != nil {
			tx.Rollback()
			return 0, 0, err
		}
		return 0, 0, tx.Rollback()
	default: // Conn
		c, err := r.Conn(ctx)
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		if _, err := c.ExecContext(ctx, ins, owner, k); err != nil {
			return 0, 0, err
		}
		rows, err := c.QueryContext(ctx, sel+" LIMIT 50")
		if err != nil {
			return 1, 0, err
		}
		return 1, foreign, scan(rows)
	}
}
