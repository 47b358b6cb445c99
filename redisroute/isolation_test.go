package redisroute_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestIsolationProperty: random interleavings of production and sandbox
// operations on the same key names, through one baseline client, single
// commands and pipelines alike. Each side keeps a model of what it wrote;
// every read must match its own side's model (a cross-read shows up as a
// mismatch), and at the end each database holds exactly its side's keys
// and values (a cross-write shows up there).
func TestIsolationProperty(t *testing.T) {
	const ops = 12000
	ids := []string{newID(), newID(), newID()}
	c, p, r := route(t, ids)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	// side 0 is production, sides 1.. the sandboxes.
	ctxs := []context.Context{context.Background()}
	for _, id := range ids {
		ctxs = append(ctxs, sandboxCtx(id))
	}
	models := make([]map[string]string, len(ctxs))
	for i := range models {
		models[i] = map[string]string{}
	}
	key := func() string { return p + "k" + strconv.Itoa(rng.IntN(40)) }
	crossReads := 0
	read := func(side int, k, got string, err error) {
		want, ok := models[side][k]
		if err == redis.Nil {
			got, err = "", nil
			if ok {
				crossReads++
				t.Errorf("side %d: %s missing, want %q", side, k, want)
			}
			return
		}
		if err != nil {
			t.Fatalf("side %d: read %s: %v", side, k, err)
		}
		if got != want {
			crossReads++
			t.Errorf("side %d: %s = %q, want %q", side, k, got, want)
		}
	}
	for i := range ops {
		side := rng.IntN(len(ctxs))
		ctx, m := ctxs[side], models[side]
		k := key()
		switch op := rng.IntN(6); op {
		case 0: // SET
			v := fmt.Sprintf("s%d-%d", side, i)
			if err := c.Set(ctx, k, v, 0).Err(); err != nil {
				t.Fatal(err)
			}
			m[k] = v
		case 1: // GET
			v, err := c.Get(ctx, k).Result()
			read(side, k, v, err)
		case 2: // DEL
			if err := c.Del(ctx, k).Err(); err != nil {
				t.Fatal(err)
			}
			delete(m, k)
		case 3: // pipeline: SET, then GET of another key
			k2 := key()
			v := fmt.Sprintf("p%d-%d", side, i)
			var get *redis.StringCmd
			_, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, k, v, 0)
				get = pipe.Get(ctx, k2)
				return nil
			})
			if err != nil && err != redis.Nil {
				t.Fatal(err)
			}
			m[k] = v
			read(side, k2, get.Val(), get.Err())
		case 4: // transaction: APPEND
			var app *redis.IntCmd
			if _, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				app = pipe.Append(ctx, k, "+")
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			m[k] += "+"
			if int(app.Val()) != len(m[k]) {
				crossReads++
				t.Errorf("side %d: APPEND %s gave length %d, want %d", side, k, app.Val(), len(m[k]))
			}
		case 5: // EXISTS
			n, err := c.Exists(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m[k]; (n == 1) != ok {
				crossReads++
				t.Errorf("side %d: EXISTS %s = %d", side, k, n)
			}
		}
		if t.Failed() && crossReads > 10 {
			t.FailNow()
		}
	}
	// Cross-writes: each database holds exactly its side's keys.
	crossWrites := 0
	for side, ctx := range ctxs {
		db, err := r.Database(ctx)
		if err != nil {
			t.Fatal(err)
		}
		direct := raw(t, db)
		var stored []string
		iter := direct.Scan(context.Background(), 0, p+"*", 1000).Iterator()
		for iter.Next(context.Background()) {
			stored = append(stored, iter.Val())
		}
		if len(stored) != len(models[side]) {
			crossWrites++
			t.Errorf("side %d (db %d) holds %d keys, its model %d", side, db, len(stored), len(models[side]))
		}
		for _, k := range stored {
			if v := direct.Get(context.Background(), k).Val(); v != models[side][k] {
				crossWrites++
				t.Errorf("side %d (db %d): %s = %q, want %q", side, db, k, v, models[side][k])
			}
		}
	}
	t.Logf("%d operations on %d sides: %d cross-reads, %d cross-writes", ops, len(ctxs), crossReads, crossWrites)
}

// TestConcurrentSandboxes: goroutines of production and four sandboxes
// start at once (their first commands claim databases concurrently) and
// each reads back only what it wrote; every sandbox ends with one database
// of its own.
func TestConcurrentSandboxes(t *testing.T) {
	ids := []string{newID(), newID(), newID(), newID()}
	c, p, r := route(t, ids)
	ctxs := []context.Context{context.Background()}
	for _, id := range ids {
		ctxs = append(ctxs, sandboxCtx(id))
	}
	errs := make(chan error, 2*len(ctxs))
	var wg sync.WaitGroup
	for g := range 2 * len(ctxs) {
		ctx := ctxs[g%len(ctxs)]
		wg.Go(func() {
			for i := range 100 {
				k := p + "k" + strconv.Itoa(i%10) // shared names across sides
				v := fmt.Sprintf("g%d-%d", g, i)
				own := p + "own" + strconv.Itoa(g)
				if err := c.Set(ctx, own, v, 0).Err(); err != nil {
					errs <- err
					return
				}
				if got := c.Get(ctx, own).Val(); got != v {
					errs <- fmt.Errorf("goroutine %d read %q, want %q", g, got, v)
					return
				}
				c.Incr(ctx, k)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[int]bool{}
	for side, ctx := range ctxs {
		db, err := r.Database(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen[db] {
			t.Errorf("database %d serves two sides", db)
		}
		seen[db] = true
		// Two goroutines per side, 100 INCRs each over 10 keys: 20 per key.
		for i := range 10 {
			if n, _ := c.Get(ctx, p+"k"+strconv.Itoa(i)).Int(); n != 20 {
				t.Errorf("side %d: k%d = %d, want 20 (another side's INCRs crossed over)", side, i, n)
			}
		}
	}
}
