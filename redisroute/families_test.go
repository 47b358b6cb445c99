package redisroute_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/redisroute"
)

// TestIsolatedFamilies: one write and one read per isolated family, sent
// through the baseline client with a sandbox context, land in the
// sandbox's database and nowhere else.
func TestIsolatedFamilies(t *testing.T) {
	id := newID()
	c, p, r := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	db, err := r.Database(sctx)
	if err != nil {
		t.Fatal(err)
	}
	sandboxDB, baseDBc := raw(t, db), raw(t, baseDB)
	for _, tc := range []struct {
		family string
		key    string
		run    func(k string) error
	}{
		{"strings", "s", func(k string) error {
			if err := c.Set(sctx, k, "v", 0).Err(); err != nil {
				return err
			}
			return c.Append(sctx, k, "w").Err()
		}},
		{"bitmaps", "b", func(k string) error { return c.SetBit(sctx, k, 7, 1).Err() }},
		{"lists", "l", func(k string) error { return c.LPush(sctx, k, "a", "b").Err() }},
		{"blocking", "bl", func(k string) error {
			c.RPush(sctx, k+"src", "x", "y")
			return c.BLMove(sctx, k+"src", k, "LEFT", "RIGHT", time.Second).Err()
		}},
		{"hashes", "h", func(k string) error { return c.HSet(sctx, k, "f", "v").Err() }},
		{"sets", "set", func(k string) error { return c.SAdd(sctx, k, "m").Err() }},
		{"sorted sets", "z", func(k string) error { return c.ZAdd(sctx, k, redis.Z{Score: 1, Member: "m"}).Err() }},
		{"streams", "x", func(k string) error {
			if err := c.XAdd(sctx, &redis.XAddArgs{Stream: k, Values: []any{"f", "v"}}).Err(); err != nil {
				return err
			}
			return c.XGroupCreate(sctx, k, "g", "0").Err()
		}},
		{"hyperloglog", "hll", func(k string) error { return c.PFAdd(sctx, k, "a").Err() }},
		{"geo", "g", func(k string) error {
			return c.GeoAdd(sctx, k, &redis.GeoLocation{Name: "m", Longitude: 13.4, Latitude: 52.5}).Err()
		}},
		{"keys", "k", func(k string) error {
			c.Set(sctx, k+"tmp", "v", 0)
			if err := c.Copy(sctx, k+"tmp", k+"copy", db, false).Err(); err != nil {
				return err
			}
			if err := c.Rename(sctx, k+"copy", k).Err(); err != nil {
				return err
			}
			return c.Expire(sctx, k, time.Hour).Err()
		}},
		{"transactions", "t", func(k string) error {
			_, err := c.TxPipelined(sctx, func(pipe redis.Pipeliner) error { pipe.Set(sctx, k, "v", 0); return nil })
			return err
		}},
	} {
		t.Run(tc.family, func(t *testing.T) {
			k := p + tc.key
			if err := tc.run(k); err != nil {
				t.Fatalf("%s in the sandbox: %v", tc.family, err)
			}
			if n := sandboxDB.Exists(ctx, k).Val(); n != 1 {
				t.Errorf("key %s not in the sandbox's database", k)
			}
			if n := baseDBc.Exists(ctx, k).Val(); n != 0 {
				t.Errorf("key %s reached the baseline database", k)
			}
			if n := c.Exists(sctx, k).Val(); n != 1 {
				t.Errorf("the sandbox does not read back %s", k)
			}
			if n := c.Exists(ctx, k).Val(); n != 0 {
				t.Errorf("production reads the sandbox's %s", k)
			}
		})
	}
	// Patterns read the sandbox's keys only.
	c.Set(ctx, p+"prod-only", 1, 0)
	keys := c.Keys(sctx, p+"*").Val()
	for _, k := range keys {
		if k == p+"prod-only" {
			t.Errorf("KEYS in the sandbox returned a production key")
		}
	}
	var scanned []string
	iter := c.Scan(sctx, 0, p+"*", 100).Iterator()
	for iter.Next(sctx) {
		scanned = append(scanned, iter.Val())
	}
	if len(scanned) != len(keys) || len(keys) == 0 {
		t.Errorf("SCAN found %d keys, KEYS %d", len(scanned), len(keys))
	}
	for _, k := range scanned {
		if k == p+"prod-only" {
			t.Errorf("SCAN in the sandbox returned a production key")
		}
	}
}

// TestRefusedFamilies: every command of every refused family, and the
// commands that would leave the sandbox's database, fail with ErrRefused
// and send nothing.
func TestRefusedFamilies(t *testing.T) {
	id := newID()
	c, p, r := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	for family, cmds := range redisroute.RefusedFamilies() {
		for _, name := range cmds {
			if err := c.Do(sctx, name, p+"k", "x").Err(); !isRefused(err) {
				t.Errorf("%s: %s: %v, want ErrRefused", family, name, err)
			}
		}
	}
	db, _ := r.Database(sctx)
	c.Set(ctx, p+"prod", "v", 0)
	c.Set(sctx, p+"mine", "v", 0)
	for name, err := range map[string]error{
		"FLUSHDB":         c.FlushDB(sctx).Err(),
		"FLUSHALL":        c.FlushAll(sctx).Err(),
		"SWAPDB":          c.Do(sctx, "swapdb", db, baseDB).Err(),
		"MOVE":            c.Move(sctx, p+"mine", baseDB).Err(),
		"COPY ... DB":     c.Copy(sctx, p+"mine", p+"moved", baseDB, true).Err(),
		"SELECT other":    c.Do(sctx, "select", baseDB).Err(),
		"CONFIG SET":      c.ConfigSet(sctx, "maxmemory", "1").Err(),
		"INFO":            c.Info(sctx).Err(),
		"CLIENT KILL":     c.ClientKill(sctx, "127.0.0.1:1").Err(),
		"CLIENT LIST":     c.ClientList(sctx).Err(),
		"RESET":           c.Do(sctx, "reset").Err(),
		"MIGRATE":         c.Migrate(sctx, "127.0.0.1", "6379", p+"mine", baseDB, time.Second).Err(),
		"marker GET":      c.Get(sctx, redisroute.MarkerKey).Err(),
		"marker DEL":      c.Del(sctx, p+"mine", redisroute.MarkerKey).Err(),
		"marker RENAME":   c.Rename(sctx, redisroute.MarkerKey, p+"x").Err(),
		"unknown command": c.Do(sctx, "notacommand", p+"k").Err(),
		"empty command":   c.Do(sctx).Err(),
	} {
		if !isRefused(err) {
			t.Errorf("%s: %v, want ErrRefused", name, err)
		}
	}
	if v := c.Get(ctx, p+"prod").Val(); v != "v" {
		t.Errorf("production key after the refusals: %q", v)
	}
	if v := c.Get(sctx, p+"mine").Val(); v != "v" {
		t.Errorf("sandbox key after the refusals: %q", v)
	}
	if owner := raw(t, db).Get(ctx, redisroute.MarkerKey).Val(); owner != id {
		t.Errorf("marker of database %d is %q, want %q", db, owner, id)
	}
}

// TestEveryServerCommandDecided: every command the server knows is either
// in an isolated family, or refused for sandboxes: none passes unnamed.
func TestEveryServerCommandDecided(t *testing.T) {
	id := newID()
	c, _, _ := route(t, []string{id})
	ctx, sctx := context.Background(), sandboxCtx(id)
	names, err := c.CommandList(ctx, nil).Result()
	if err != nil {
		t.Fatal(err)
	}
	isolated := map[string]bool{}
	for _, cmds := range redisroute.IsolatedFamilies() {
		for _, name := range cmds {
			isolated[name] = true
		}
	}
	for _, name := range names {
		name = strings.ToLower(name)
		if isolated[name] {
			continue
		}
		// Not isolated: the policy must refuse it before it is sent.
		if err := c.Do(sctx, name, "rrt-never-a-key").Err(); !isRefused(err) {
			t.Errorf("server command %s is in no isolated family, yet %v", name, err)
		}
	}
	if len(names) < 200 {
		t.Errorf("COMMAND LIST returned %d commands", len(names))
	}
}
