package routes_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // atomic, as config management does
		t.Fatal(err)
	}
}

func doc(id, upstream string) string {
	return fmt.Sprintf(`{"sandboxes":[{"id":%q,"services":{"cart":%q}}]}`, id, upstream)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestFileSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	writeFile(t, path, doc("pr-1", "h:1"))

	tbl := routes.New()
	if err := tbl.Load(context.Background(), routes.File(path)); err != nil {
		t.Fatal(err)
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:1" {
		t.Fatalf("initial load: %q", up)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var errs atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- tbl.Sync(ctx, routes.File(path), routes.Every(5*time.Millisecond), routes.MaxBackoff(10*time.Millisecond),
			routes.OnError(func(error) { errs.Add(1) }))
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Sync returned %v", err)
		}
	}()

	// Reload on change.
	changed := tbl.Changed()
	writeFile(t, path, doc("pr-1", "h:2")+"\n")
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("file change not picked up")
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:2" {
		t.Fatalf("after change: %q", up)
	}

	// A bad file is rejected whole; the last good table stays.
	writeFile(t, path, `{"sandboxes":[{"id":"pr-2","services":{"cart":"h:9"}},{"id":"BAD"}]}`)
	waitFor(t, "the bad file to be reported", func() bool { return tbl.Err() != nil && errs.Load() > 0 })
	if !errors.Is(tbl.Err(), routes.ErrInvalid) {
		t.Fatalf("Err() = %v", tbl.Err())
	}
	if _, ok := tbl.Lookup("pr-2", "cart"); ok {
		t.Fatal("part of a bad file was applied")
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:2" {
		t.Fatalf("last good table lost: %q", up)
	}

	// A missing file too; then recovery.
	os.Remove(path)
	waitFor(t, "the missing file to be reported", func() bool { return errors.Is(tbl.Err(), os.ErrNotExist) })
	writeFile(t, path, doc("pr-3", "h:3"))
	waitFor(t, "recovery", func() bool { _, ok := tbl.Lookup("pr-3", "cart"); return ok })
	if tbl.Err() != nil {
		t.Fatalf("Err() after recovery = %v", tbl.Err())
	}
	if _, ok := tbl.Lookup("pr-1", "cart"); ok {
		t.Fatal("pr-1 still routes after it left the file")
	}
}

func TestHTTPSync(t *testing.T) {
	var (
		mu      sync.Mutex
		body    = doc("pr-1", "h:1")
		fail    bool
		hits    int
		notMods int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		if fail {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		etag := fmt.Sprintf(`"%08x"`, crc32.ChecksumIEEE([]byte(body)))
		if r.Header.Get("If-None-Match") == etag {
			notMods++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	set := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	get := func(f func() bool) bool { mu.Lock(); defer mu.Unlock(); return f() }

	tbl := routes.New()
	before := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tbl.Sync(ctx, routes.HTTP(srv.URL, srv.Client()), routes.Every(5*time.Millisecond), routes.MaxBackoff(20*time.Millisecond))
	}()
	defer func() { cancel(); <-done }()

	waitFor(t, "first sync", func() bool { _, ok := tbl.Lookup("pr-1", "cart"); return ok })
	waitFor(t, "a 304", func() bool { return get(func() bool { return notMods > 0 }) })
	if tbl.SyncedAt().Before(before) {
		t.Fatalf("SyncedAt %v before the first fetch", tbl.SyncedAt())
	}

	// The endpoint fails: last good kept, SyncedAt stops advancing.
	set(func() { fail = true })
	waitFor(t, "the failure", func() bool { return tbl.Err() != nil })
	stale := tbl.SyncedAt()
	h := 0
	set(func() { h = hits })
	waitFor(t, "retries", func() bool { return get(func() bool { return hits >= h+3 }) })
	if !tbl.SyncedAt().Equal(stale) {
		t.Fatal("SyncedAt advanced while the source was failing")
	}
	if _, ok := tbl.Lookup("pr-1", "cart"); !ok {
		t.Fatal("last good table lost on failure")
	}

	set(func() { fail = false; body = doc("pr-2", "h:2") })
	waitFor(t, "recovery", func() bool { _, ok := tbl.Lookup("pr-2", "cart"); return ok })
	if !tbl.SyncedAt().After(stale) {
		t.Fatal("SyncedAt did not advance after recovery")
	}
}

func TestSyncedAtOfHandFilledTable(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	clk.Advance(time.Hour)
	if !tbl.SyncedAt().Equal(clk.Now()) {
		t.Fatalf("a table without a source is always current; SyncedAt = %v", tbl.SyncedAt())
	}
}

// TestConcurrentLookups runs lookups while the table reloads; -race checks
// the snapshots.
func TestConcurrentLookups(t *testing.T) {
	tbl := routes.New()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var found atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				for i := range 10 {
					if up, ok := tbl.Lookup(fmt.Sprintf("s-%d", i), "cart"); ok {
						if up == "" {
							t.Error("empty upstream")
						}
						found.Add(1)
					}
				}
				tbl.Sandboxes()
			}
		}()
	}
	for gen := range 300 {
		sbs := make([]routes.Sandbox, 10)
		for i := range sbs {
			sbs[i] = routes.Sandbox{ID: fmt.Sprintf("s-%d", i), Services: map[string]routes.Route{"cart": {Upstream: fmt.Sprintf("h:%d", gen+1)}}}
		}
		if err := tbl.Update(sbs[:gen%10+1]); err != nil {
			t.Fatal(err)
		}
	}
	for found.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
}
