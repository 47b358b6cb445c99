package etcdtest_test

// Second attack on the etcd source (#15): stopping a Sync while its store
// hangs, and endpoints that answer nothing.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// TestStopWhileHung: a Sync stopped while its store hangs (the fresh read
// or a proof in flight, with a long Timeout) returns at once rather than
// after the Timeout, leaving no goroutine behind (TestMain checks), and
// the table keeps what it had.
func TestStopWhileHung(t *testing.T) {
	bothModes(t, func(t *testing.T, mode []etcdroutes.Option) {
		for _, when := range []string{"reading", "proving"} {
			t.Run(when, func(t *testing.T) {
				direct, proxy, viaProxy := proxied(t)
				put(t, direct, sandbox("pr-1", "h:1"))
				tbl := routes.New()
				src := source(t, viaProxy, append(mode, etcdroutes.Timeout(time.Hour))...)
				if when == "reading" {
					proxy.Freeze()
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- src.Sync(ctx, tbl) }()
				if when == "proving" {
					synced(t, tbl)
					proxy.Freeze()
					put(t, direct, sandbox("pr-1", "h:2"))
				}
				// Several proof ticks (20 ms) pass with the store hung.
				time.Sleep(200 * time.Millisecond)
				before := tbl.SyncedAt()
				cancel()
				select {
				case err := <-done:
					if !errors.Is(err, context.Canceled) {
						t.Fatalf("Sync returned %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Sync did not return after its context was cancelled, with the store hung")
				}
				if want := map[string]string{"reading": "", "proving": "h:1"}[when]; lookup(tbl, "pr-1") != want {
					t.Fatalf("pr-1 routes to %q, want %q", lookup(tbl, "pr-1"), want)
				}
				if !tbl.SyncedAt().Equal(before) {
					t.Fatalf("SyncedAt moved from %v to %v after the store hung", before, tbl.SyncedAt())
				}
				proxy.Thaw()
			})
		}
	})
}

// TestHungEndpoint: one endpoint of the client accepts connections and
// answers nothing, so asking it for its etcd version hangs (until the
// Timeout); the session proves by reading meanwhile, and the table is
// synced and never ahead of the store.
func TestHungEndpoint(t *testing.T) {
	srv := startServer(t)
	_, hung, _ := proxied(t)
	hung.Freeze()
	syncedMeansSynced(t, client(t, srv.Endpoint(), hung.Addr()), nil)
}
