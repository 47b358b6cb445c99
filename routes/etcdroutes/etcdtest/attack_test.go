package etcdtest_test

// Attacks on the etcd source (#15): what an operator, a crash or a
// broken link does to the store, and what the table must still promise.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// bothModes runs test with progress notifications and with proofs by
// reading (what servers too old for notifications get).
func bothModes(t *testing.T, test func(t *testing.T, mode []etcdroutes.Option)) {
	t.Run("progress notifications", func(t *testing.T) { test(t, nil) })
	t.Run("proof by reading", func(t *testing.T) { test(t, []etcdroutes.Option{etcdroutes.ProveByReading()}) })
}

// TestWipedStore: etcd comes back empty (its data lost, or restored
// from nothing), so its revisions start over below the ones the watch has
// seen. The table must not call itself synced with the sandboxes of the
// old store: it reads the new one afresh.
func TestWipedStore(t *testing.T) {
	bothModes(t, testWipedStore)
}

func testWipedStore(t *testing.T, mode []etcdroutes.Option) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	for i := range 20 { // revisions the new store will not reach soon
		put(t, c, sandbox(fmt.Sprintf("pr-%d", i), "h:1"))
	}
	tbl := routes.New()
	syncing(t, source(t, c, mode...), tbl)
	synced(t, tbl)

	if err := srv.Wipe(); err != nil {
		t.Fatal(err)
	}
	put(t, c, sandbox("pr-new", "h:2"))
	wiped := time.Now()
	syncedAt(t, tbl, wiped)
	if got := len(tbl.Sandboxes()); got != 1 || lookup(tbl, "pr-new") != "h:2" {
		t.Fatalf("synced after the wipe, the table holds %d sandboxes (pr-0 %q, pr-new %q), want only pr-new",
			got, lookup(tbl, "pr-0"), lookup(tbl, "pr-new"))
	}
}

// TestDeleteWhileDisconnected: a sandbox deleted while the link is down
// (no compaction: the watch resumes where it was) is gone once the table
// is synced again.
func TestDeleteWhileDisconnected(t *testing.T) {
	bothModes(t, testDeleteWhileDisconnected)
}

func testDeleteWhileDisconnected(t *testing.T, mode []etcdroutes.Option) {
	direct, proxy, viaProxy := proxied(t)
	put(t, direct, sandbox("pr-a", "h:1"))
	put(t, direct, sandbox("pr-b", "h:1"))
	tbl := routes.New()
	syncing(t, source(t, viaProxy, mode...), tbl)
	synced(t, tbl)

	proxy.Freeze()
	del(t, direct, "pr-a")
	proxy.Reset()
	deleted := time.Now()
	if lookup(tbl, "pr-a") != "h:1" {
		t.Fatal("saw a delete through a cut link")
	}
	proxy.Thaw()
	syncedAt(t, tbl, deleted)
	if lookup(tbl, "pr-a") != "" || lookup(tbl, "pr-b") != "h:1" {
		t.Fatalf("after reconnecting: pr-a %q, pr-b %q", lookup(tbl, "pr-a"), lookup(tbl, "pr-b"))
	}
}

// TestPrefixMustEndWithSlash: a prefix without a trailing slash also
// covers the keys of others ("/sandboxes" covers "/sandboxes-old/x"), and
// Key would glue IDs onto it: New refuses it. With the slash, keys that
// merely start with the same string are not read.
func TestPrefixMustEndWithSlash(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	if _, err := etcdroutes.New(c, "/sandboxes"); !errors.Is(err, etcdroutes.ErrConfig) {
		t.Fatalf("New with a prefix without a slash: %v, want ErrConfig", err)
	}
	if _, err := c.Put(context.Background(), "/sandboxkit/routes-old/pr-1", "garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(context.Background(), "/sandboxkit/routesx", "garbage"); err != nil {
		t.Fatal(err)
	}
	put(t, c, sandbox("pr-1", "h:1"))
	tbl := routes.New()
	syncing(t, source(t, c), tbl)
	settled(t, tbl, "pr-1", "h:1", "beside keys sharing the prefix string")
}

// TestForeignKeyUnderPrefix: a key under the prefix that names no sandbox
// ("prefix/a/b", "prefix/" itself holding a value) fails closed: the read
// fails whole, the watch holds SyncedAt back and Err names the key.
func TestForeignKeyUnderPrefix(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	put(t, c, sandbox("pr-1", "h:1"))
	tbl := routes.New()
	syncing(t, source(t, c), tbl)
	synced(t, tbl)

	v, _ := etcdroutes.Marshal(sandbox("pr-2", "h:2"))
	if _, err := c.Put(context.Background(), prefix+"team/pr-2", string(v)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Err naming the foreign key", func() bool {
		err := tbl.Err()
		return err != nil && strings.Contains(err.Error(), prefix+"team/pr-2")
	})
	held := tbl.SyncedAt()
	time.Sleep(100 * time.Millisecond) // several proofs' worth
	if !tbl.SyncedAt().Equal(held) || lookup(tbl, "pr-1") != "h:1" {
		t.Fatalf("with a foreign key: SyncedAt moved from %v to %v, pr-1 %q", held, tbl.SyncedAt(), lookup(tbl, "pr-1"))
	}

	fresh := routes.New()
	syncing(t, source(t, c), fresh)
	waitFor(t, "a fresh read to fail", func() bool { return fresh.Err() != nil })
	if !fresh.SyncedAt().IsZero() || len(fresh.Sandboxes()) != 0 {
		t.Fatalf("a fresh read with a foreign key synced: %v, %d sandboxes", fresh.SyncedAt(), len(fresh.Sandboxes()))
	}

	if _, err := c.Delete(context.Background(), prefix+"team/pr-2"); err != nil {
		t.Fatal(err)
	}
	settled(t, tbl, "pr-1", "h:1", "after deleting the foreign key")
	settled(t, fresh, "pr-1", "h:1", "a fresh table, after deleting the foreign key")
}

// TestThousandInOneTxn: a thousand sandboxes written in one transaction
// arrive together, and a delete of the whole prefix (one revision, a
// thousand events) empties the table.
func TestThousandInOneTxn(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	put(t, c, sandbox("pr-keep", "h:10"))
	tbl := routes.New()
	syncing(t, source(t, c, etcdroutes.Timeout(10*time.Second)), tbl)
	synced(t, tbl)

	const n = 1000
	ops := make([]clientv3.Op, 0, n)
	for i := range n {
		v, err := etcdroutes.Marshal(sandbox(fmt.Sprintf("pr-%d", i), fmt.Sprintf("h:%d", 1000+i)))
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut(prefix+fmt.Sprintf("pr-%d", i), string(v)))
	}
	ops[0] = clientv3.OpDelete(prefix + "pr-keep") // a delete in the same revision
	if _, err := c.Txn(context.Background()).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	synced(t, tbl)
	if got := len(tbl.Sandboxes()); got != n-1 || lookup(tbl, "pr-keep") != "" || lookup(tbl, "pr-999") != "h:1999" {
		t.Fatalf("after the txn: %d sandboxes, pr-keep %q, pr-999 %q", got, lookup(tbl, "pr-keep"), lookup(tbl, "pr-999"))
	}

	if _, err := c.Delete(context.Background(), prefix, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	synced(t, tbl)
	if got := len(tbl.Sandboxes()); got != 0 || tbl.Err() != nil {
		t.Fatalf("after deleting the prefix: %d sandboxes, Err %v", got, tbl.Err())
	}
}

// TestHugeValue: a sandbox near etcd's request limit (1.5 MiB) with five
// thousand routes is read and followed like any other.
func TestHugeValue(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	sb := sandbox("pr-big", "h:1")
	for i := range 5000 {
		sb.Services[fmt.Sprintf("service-%04d-%s", i, strings.Repeat("x", 200))] = routes.Route{Upstream: fmt.Sprintf("h:%d", 2000+i)}
	}
	v, err := etcdroutes.Marshal(sb)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) < 1<<20 {
		t.Fatalf("the value is only %d bytes", len(v))
	}
	tbl := routes.New()
	syncing(t, source(t, c), tbl)
	if _, err := c.Put(context.Background(), prefix+"pr-big", string(v)); err != nil {
		t.Fatal(err)
	}
	settled(t, tbl, "pr-big", "h:1", "a huge value")
	if up, _ := tbl.Lookup("pr-big", fmt.Sprintf("service-4999-%s", strings.Repeat("x", 200))); up != "h:6999" {
		t.Fatalf("the last route of the huge value: %q", up)
	}
}

// TestDeadEndpoint: one endpoint of the client never answers, so its
// etcd version is unknown and the session proves by reading; the table is
// still synced, and never ahead of the store.
func TestDeadEndpoint(t *testing.T) {
	srv := startServer(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // connections to it are refused
	syncedMeansSynced(t, client(t, srv.Endpoint(), deadAddr), nil)
}

// TestFrozenFromStart: a table whose store hangs from the start stays
// synced up to nothing, and empty, with Err set, until the store answers.
func TestFrozenFromStart(t *testing.T) {
	bothModes(t, func(t *testing.T, mode []etcdroutes.Option) {
		direct, proxy, viaProxy := proxied(t)
		put(t, direct, sandbox("pr-1", "h:1"))
		proxy.Freeze()
		tbl := routes.New()
		syncing(t, source(t, viaProxy, append(mode, etcdroutes.Timeout(300*time.Millisecond))...), tbl)
		waitFor(t, "Err while the store hangs", func() bool { return tbl.Err() != nil })
		if !tbl.SyncedAt().IsZero() || len(tbl.Sandboxes()) != 0 {
			t.Fatalf("frozen from the start: SyncedAt %v, %d sandboxes", tbl.SyncedAt(), len(tbl.Sandboxes()))
		}
		proxy.Thaw()
		recovered(t, tbl, "pr-1", "h:1", "after thawing")
	})
}
