package redisroute_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/internal/redislock"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/redisroute"
)

// The tests own databases 1 to 15 of the server on 127.0.0.1:6379 while
// they run: the baseline is database baseDB (each test's keys under its own
// prefix), the sandboxes get databases sandboxFirst to sandboxLast, and
// every sandbox ID a test uses starts with testIDPrefix, so databases left
// over by an interrupted run are reclaimed, and no others.
const (
	addr         = "127.0.0.1:6379"
	baseDB       = 1
	sandboxFirst = 2
	sandboxLast  = 15
	testIDPrefix = "rrt-"
)

var dbs = redisroute.Databases{First: sandboxFirst, Last: sandboxLast}

func TestMain(m *testing.M) { goleak.VerifyTestMain(redislock.Run(m)) }

var (
	reachOnce sync.Once
	reachErr  error
)

// server skips t (or fails it under SANDBOXKIT_REQUIRE_DATABASE=1) when
// Redis is not running, and reclaims the databases of interrupted runs once.
func server(t testing.TB) {
	t.Helper()
	reachOnce.Do(func() {
		c := redis.NewClient(&redis.Options{Addr: addr, DB: 0})
		defer c.Close()
		ctx := context.Background()
		if reachErr = c.Ping(ctx).Err(); reachErr != nil {
			return
		}
		for db := sandboxFirst; db <= sandboxLast; db++ {
			cn := c.Conn()
			cn.Select(ctx, db)
			if id, _ := cn.Get(ctx, redisroute.MarkerKey).Result(); strings.HasPrefix(id, testIDPrefix) {
				cn.FlushDB(ctx)
			}
			cn.Close()
		}
	})
	if reachErr != nil {
		if os.Getenv("SANDBOXKIT_REQUIRE_DATABASE") == "1" {
			t.Fatalf("Redis at %s: %v (SANDBOXKIT_REQUIRE_DATABASE=1)", addr, reachErr)
		}
		t.Skipf("SKIPPING: no Redis at %s: %v", addr, reachErr)
	}
}

// baseline returns a client of the baseline database, closed at the end of
// t, and the key prefix t owns in it (deleted at the end).
func baseline(t testing.TB) (*redis.Client, string) {
	t.Helper()
	server(t)
	c := redis.NewClient(&redis.Options{Addr: addr, DB: baseDB})
	prefix := "rrt:" + t.Name() + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		var keys []string
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		c.Close()
	})
	return c, prefix
}

// route returns a baseline client with a router installed, the key prefix
// the test owns, and the router, which destroys ids at the end of t.
func route(t testing.TB, ids []string, opts ...redisroute.RouterOption) (*redis.Client, string, *redisroute.Router) {
	t.Helper()
	c, prefix := baseline(t)
	r, err := redisroute.New(c, dbs, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			if err := r.Destroy(context.Background(), id); err != nil {
				t.Errorf("Destroy(%s): %v", id, err)
			}
		}
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c, prefix, r
}

// newID returns a fresh sandbox ID for a test.
func newID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return testIDPrefix + hex.EncodeToString(b)
}

func sandboxCtx(id string) context.Context {
	return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: "tester"})
}

// raw returns a client of database db without any hook, to look at what
// is really stored.
func raw(t testing.TB, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	t.Cleanup(func() { c.Close() })
	return c
}

func isRefused(err error) bool { return errors.Is(err, redisroute.ErrRefused) }

// count returns how many records of rec match.
func count(recs []map[string]string, match func(map[string]string) bool) int {
	n := 0
	for _, m := range recs {
		if match(m) {
			n++
		}
	}
	return n
}
